"""The wire of weight sync: everything that moves and loads weights, without Ray.

    buckets      flat per-dtype buckets of named tensors, checksums, bytes
    group        the broadcast process group (gloo / NCCL) beside torch.distributed's default group
    protocol     one sync over a group: header, buckets, trailer (version, sender status, checksums)
    receiver     loading buckets into a torch module (HF) in place; SyncError
    handover     buckets handed over in memory (object store bytes, CUDA IPC handles)
    vllm_load    loading buckets into a vLLM model in its worker process (cast, load in place, CPU re-packing)

Senders (the learner) and receivers (rollout workers, vLLM's worker processes) use these; which of them a sync
takes is the transport's business (rayscale.sync.transports). Ray never enters here: vLLM's worker processes load
it (tests/test_package_boundaries.py imports each module in a fresh interpreter).
"""
