"""A stand-in learner rank for sync tests and benchmarks: a plain torch model + SGD, and the real sender mixin.

It has exactly what `WeightSenderMixin` relies on (`rank`, `bucket_bytes`, `iter_params_for_sync`), as the DeepSpeed
`LearnerRank` does; wrap it with `ray.remote` to run it as an actor.
"""

from __future__ import annotations

import torch

from rayscale.config import DEFAULT_BUCKET_BYTES
from rayscale.sync.sender import WeightSenderMixin
from rayscale.wire.buckets import state_checksums


class ToyLearner(WeightSenderMixin):
    """`flat_params=True` lays the parameters out back to back in one buffer, as DeepSpeed ZeRO-1/2 does."""

    sync_zero_copy = True  # its tensors are its parameters, untouched while a sync runs

    def __init__(self, model_path: str, lr: float = 1.0, rank: int = 0, device: str = "cpu",
                 flat_params: bool = False, bucket_bytes: int = DEFAULT_BUCKET_BYTES):
        from rayscale.models import load_model, load_tokenizer

        self.rank = rank
        self.bucket_bytes = int(bucket_bytes)
        self.model = load_model(model_path, "float32", device)
        if flat_params:
            _flatten_parameters(self.model)
        self.tokenizer = load_tokenizer(model_path)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr)

    def ready(self) -> dict:
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address()}

    def train_step(self, text: str) -> float:
        """One causal-LM SGD step on `text`: enough to move every weight the sync must then carry."""
        ids = torch.tensor([self.tokenizer(text, add_special_tokens=False)["input_ids"]], device=self.model.device)
        self.model.train()
        loss = self.model(input_ids=ids, labels=ids).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.eval()
        return float(loss)

    def set_bucket_bytes(self, bucket_bytes: int) -> None:
        """Tests only: change the layout behind the coordinator's back (a real learner's size is fixed)."""
        self.bucket_bytes = int(bucket_bytes)

    def iter_params_for_sync(self, every_rank: bool = False):  # one rank: every rank is rank 0
        seen: set[int] = set()
        for name, tensor in self.model.state_dict().items():
            if tensor.data_ptr() in seen:  # a tied weight (lm_head = embed_tokens): the receiver ties it back
                continue
            seen.add(tensor.data_ptr())
            yield name, tensor

    @torch.no_grad()
    def greedy(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """The learner model's own greedy continuation of each prompt, one `generate` call per prompt."""
        texts = []
        for prompt in prompts:
            ids = torch.tensor([self.tokenizer(prompt, add_special_tokens=False)["input_ids"]], device=self.model.device)
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
            texts.append(self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
        return texts

    @torch.no_grad()
    def score_greedy(self, prompts: list[str], continuations: list[list[int]]) -> dict:
        from rayscale.sync.output_check import score_greedy

        return {"scores": score_greedy(self.model, self.tokenizer, prompts, continuations), "dtype": "float32"}

    def get_state_checksum(self) -> dict[str, int]:
        return state_checksums(self.model.state_dict().items())


@torch.no_grad()
def _flatten_parameters(model: torch.nn.Module) -> None:
    params = list(model.parameters())  # registration order, tied weights once
    flat = torch.cat([p.reshape(-1) for p in params])
    offset = 0
    for p in params:
        p.data = flat[offset : offset + p.numel()].view(p.shape)
        offset += p.numel()
