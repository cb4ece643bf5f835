"""Rollout generation backends: `hf` (transformers generate, pure, in hf_engine) and `vllm` (vllm_engine)."""
