"""What tests read off running actors that a run itself never asks for, through the managers' public actors (as
torchtune's tests/common.py), so that no production class carries a method only tests call."""

from __future__ import annotations

import ray
import torch


def policy_versions(manager) -> list[int]:
    """The policy version each rollout worker of a RolloutManager holds, in worker order."""
    return ray.get([worker.policy_version.remote() for worker in manager.workers])


def learner_state(group) -> dict[str, torch.Tensor]:
    """A LearnerGroup's full policy state dict (HF names, tied aliases and persistent buffers) on rank 0's CPU.
    Every rank takes part (`LearnerEngine.gather_state_for_sync`: under ZeRO-3 the gathers are collective)."""
    return ray.get([rank.gather_state_for_sync.remote() for rank in group.ranks])[0]


@torch.no_grad()
def engine_greedy(engine, prompts: list[str], max_new_tokens: int) -> list[list[int]]:
    """A LearnerEngine's own greedy continuation ids of each prompt (HF generate on its model, EOS included when
    reached). Collective under ZeRO-3: every rank generates in step (synced_gpus)."""
    engine.policy.eval()  # the next step sets train() again
    out = []
    for prompt in prompts:
        ids = torch.tensor([engine.tokenizer(prompt, add_special_tokens=False)["input_ids"]],
                           device=engine._comm_device)
        gen = engine.hf_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                       max_new_tokens=max_new_tokens, pad_token_id=engine.tokenizer.pad_token_id,
                                       eos_token_id=engine.tokenizer.eos_token_id,
                                       synced_gpus=engine.cfg.zero_stage == 3)
        out.append(gen[0, ids.shape[1]:].tolist())
    return out


def learner_greedy(group, prompts: list[str], max_new_tokens: int) -> list[list[int]]:
    """Rank 0's greedy continuation ids of a LearnerGroup's policy (every rank runs `engine_greedy`)."""
    return ray.get([rank.__ray_call__.remote(engine_greedy, prompts, max_new_tokens) for rank in group.ranks])[0]
