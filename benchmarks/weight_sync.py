"""Weight sync from a learner to a rollout worker on another Ray node: rayscale's bucketed broadcast against
the link's limit and the usual alternatives, side by side in one run.

    (bucketed)     RolloutManager.sync_from: flat per-dtype buckets over the dedicated sync group; the learner's
                   parameters lie back to back in one buffer, as under DeepSpeed ZeRO-1/2, so buckets are views
    (bucketed_copy) the same with every tensor copied into a bucket buffer (ZeRO-3, or any scattered layout)
    (raw)          one torch.distributed broadcast of a flat buffer of the same total bytes over the same group:
                   what the link can do (`ratio_vs_raw` = bucketed GB/s / raw GB/s; target >= 0.9)
    (per_tensor)   one broadcast per tensor, each announced to the worker by a Ray call, as OpenRLHF does
                   (`speedup_vs_per_tensor` = per-tensor time / bucketed time; target >= 5)
    (object_store) the buckets through the Ray object store (rayscale's fallback transport)

Two Ray nodes on this machine (ray.cluster_utils.Cluster): the learner on node0, the worker(s) on node1.
The model is a Llama with 218 parameter tensors (82M parameters at full size, 20M with --quick).

    python benchmarks/weight_sync.py [--quick] [--json out.json] [--backend gloo|nccl]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rayscale.config import RoleResources, RolloutConfig, SyncConfig, TinyModelConfig  # noqa: E402


# ---------------------------------------------------------------- baselines, run inside the actors via __ray_call__
def _raw_broadcast(actor, nbytes: int, role: str) -> float:
    """One broadcast of a warm flat buffer of `nbytes` over the actor's sync group."""
    group = actor._sync_group if role == "sender" else actor.backend.group
    buf = getattr(actor, "_bench_raw", None)
    if buf is None or buf.numel() != nbytes:
        buf = actor._bench_raw = torch.ones(nbytes, dtype=torch.uint8, device=group.device)
    start = time.perf_counter()
    group.broadcast(buf).wait()
    return time.perf_counter() - start


def _set_zero_copy(actor, on: bool) -> None:
    actor.sync_zero_copy = on


def _per_tensor_send(actor, workers: list) -> float:
    """OpenRLHF's pattern: for each parameter, ask every worker over Ray to receive it, broadcast it, wait."""
    import ray

    group = actor._sync_group
    start = time.perf_counter()
    for name, tensor in actor.iter_params_for_sync(0):
        refs = [w.__ray_call__.remote(_per_tensor_receive, name, str(tensor.dtype), tuple(tensor.shape))
                for w in workers]
        group.broadcast(tensor.to(group.device).contiguous()).wait()
        ray.get(refs)
    return time.perf_counter() - start


def _per_tensor_receive(actor, name: str, dtype: str, shape: tuple) -> None:
    group = actor.backend.group
    weight = torch.empty(shape, dtype=getattr(torch, dtype.removeprefix("torch.")), device=group.device)
    group.broadcast(weight).wait()
    targets = getattr(actor, "_bench_targets", None)
    if targets is None:  # built once (vLLM's load_weights rebuilds its dict per call; we spare the baseline that)
        targets = actor._bench_targets = dict(actor.backend.engine.model.state_dict(keep_vars=True))
    with torch.no_grad():
        targets[name].copy_(weight)


# ---------------------------------------------------------------- the benchmark
def run(args) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from rayscale.actors.rollout import RolloutManager
    from rayscale.models import make_tiny_model
    from rayscale.sync.toy_learner import ToyLearner

    gpu = args.backend == "nccl"
    if gpu and torch.cuda.device_count() < 2:
        raise SystemExit("--backend nccl needs 2 GPUs on this machine (NCCL refuses two ranks on one GPU)")
    dims = (dict(hidden_size=256, intermediate_size=768) if args.quick
            else dict(hidden_size=512, intermediate_size=1536))
    tiny = TinyModelConfig(num_layers=24, num_heads=8, max_position_embeddings=256, **dims)
    tmp = tempfile.TemporaryDirectory()
    model_dir = str(make_tiny_model(Path(tmp.name) / "model", tiny))

    # An object store that holds the model (cluster_utils' default of 150 MB per node would spill it to disk).
    store = 1 << 30
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": int(gpu),
                                                            "resources": {"node0": 1}, "object_store_memory": store})
    cluster.add_node(num_cpus=2, num_gpus=int(gpu), resources={"node1": 1}, object_store_memory=store)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        learner = ray.remote(ToyLearner).options(num_cpus=1, num_gpus=int(gpu), resources={"node0": 0.1}).remote(
            model_dir, device="cuda" if gpu else "cpu", flat_params=True)
        ray.get(learner.ready.remote())
        manager = RolloutManager(
            model_dir, RolloutConfig(num_workers=args.workers, device="cuda" if gpu else "cpu"),
            SyncConfig(bucket_size_mb=args.bucket_mb, backend=args.backend, timeout_s=600),
            RoleResources(num_cpus=1, num_gpus=int(gpu) / args.workers if gpu else 0, resources={"node1": 0.1}))
        workers = manager.workers
        version = iter(range(1, 10**6))

        def bucketed(zero_copy: bool = True) -> tuple[float, int]:
            ray.get(learner.__ray_call__.remote(_set_zero_copy, zero_copy))
            start = time.perf_counter()
            report = manager.sync_from(learner, next(version))
            return time.perf_counter() - start, report["bytes"]

        first_seconds, nbytes = bucketed()  # warm-up: forms the group, binds the worker's parameters

        def raw() -> float:
            start = time.perf_counter()
            refs = [w.__ray_call__.remote(_raw_broadcast, nbytes, "receiver") for w in workers]
            ray.get([learner.__ray_call__.remote(_raw_broadcast, nbytes, "sender")] + refs)
            return time.perf_counter() - start

        def per_tensor() -> float:
            start = time.perf_counter()
            ray.get(learner.__ray_call__.remote(_per_tensor_send, workers))
            return time.perf_counter() - start

        def object_store() -> float:
            start = time.perf_counter()
            manager.sync_from(learner, next(version), transport="object_store")
            return time.perf_counter() - start

        raw(), per_tensor(), object_store(), bucketed(False)  # warm-up
        times: dict[str, list[float]] = {"bucketed": [], "bucketed_copy": [], "raw": [], "per_tensor": [],
                                         "object_store": []}
        methods = [("bucketed", lambda: bucketed()[0]), ("bucketed_copy", lambda: bucketed(False)[0]),
                   ("raw", raw), ("per_tensor", per_tensor), ("object_store", object_store)]
        for i in range(args.repeats):  # interleaved in a rotating order: load swings and after-effects (the
            for name, fn in methods[i % 5:] + methods[: i % 5]:  # object store's cleanup) hit all alike
                times[name].append(fn())
        want = ray.get(learner.get_state_checksum.remote())
        assert all(ray.get(w.get_state_checksum.remote()) == want for w in workers), "workers differ from learner"
        manager.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()
        tmp.cleanup()

    med = {k: statistics.median(v) for k, v in times.items()}
    gbps = {k: nbytes / t / 1e9 for k, t in med.items()}

    def paired(a: str, b: str) -> float:  # median over rounds of time(b) / time(a): robust to load swings
        return statistics.median(tb / ta for ta, tb in zip(times[a], times[b]))

    return {
        "backend": args.backend, "quick": args.quick, "workers": args.workers, "bucket_mb": args.bucket_mb,
        "model": {**tiny.model_dump(), "tensors": 218, "bytes": nbytes},
        "repeats": args.repeats, "first_sync_seconds": first_seconds,
        "seconds": med, "gbps": gbps, "all_seconds": times,
        "bucketed_gbps": gbps["bucketed"], "bucketed_copy_gbps": gbps["bucketed_copy"], "raw_gbps": gbps["raw"],
        "per_tensor_gbps": gbps["per_tensor"],
        "object_store_gbps": gbps["object_store"],
        "ratio_vs_raw": paired("bucketed", "raw"),
        "ratio_vs_raw_copy": paired("bucketed_copy", "raw"),
        "speedup_vs_per_tensor": paired("bucketed", "per_tensor"),
        "object_store_ratio_vs_raw": paired("object_store", "raw"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20M-parameter model, 5 rounds (about a minute)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--backend", choices=["gloo", "nccl"], default="gloo")
    ap.add_argument("--workers", type=int, default=1, help="rollout workers on node1")
    ap.add_argument("--bucket-mb", type=float, default=64.0)
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (5 if args.quick else 10)
    res = run(args)
    mb = res["model"]["bytes"] / 1e6
    print(f"\nweight sync, {args.backend}, {mb:.0f} MB in 218 tensors, {args.workers} worker(s) on another node, "
          f"median of {args.repeats} rounds (ratios: median of per-round ratios)")
    print(f"{'method':<15}{'seconds':>9}{'GB/s':>9}")
    for k in ("raw", "bucketed", "bucketed_copy", "per_tensor", "object_store"):
        print(f"{k:<15}{res['seconds'][k]:>9.3f}{res['gbps'][k]:>9.2f}")
    print(f"ratio_vs_raw = {res['ratio_vs_raw']:.2f} (target >= 0.9; copying every tensor: "
          f"{res['ratio_vs_raw_copy']:.2f})   "
          f"speedup_vs_per_tensor = {res['speedup_vs_per_tensor']:.1f}x (target >= 5)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
