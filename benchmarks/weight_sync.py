"""Weight sync from a learner to a rollout worker on another Ray node: rayscale's bucketed broadcast against
the link's limit and the usual alternatives, side by side in one run.

    (bucketed)     WeightSync.push: flat per-dtype buckets over the dedicated sync group; the learner's
                   parameters lie back to back in one buffer, as under DeepSpeed ZeRO-1/2, so buckets are views
    (bucketed_copy) the same with every tensor copied into a bucket buffer (ZeRO-3, or any scattered layout)
    (raw)          one torch.distributed broadcast of a flat buffer of the same total bytes over the same group:
                   what the link can do (`ratio_vs_raw` = bucketed GB/s / raw GB/s; target >= 0.9)
    (per_tensor)   one broadcast per tensor, each announced to the worker by a Ray call, as OpenRLHF does
                   (`speedup_vs_per_tensor` = per-tensor time / bucketed time; target >= 5)
    (object_store) the buckets through the Ray object store (rayscale's fallback transport)

Two Ray nodes on this machine (ray.cluster_utils.Cluster): the learner on node0, the worker(s) on node1.
The model is a Llama with 218 parameter tensors (82M parameters at full size, 20M with --quick).

vLLM section (when vLLM is importable: run it in `.venv-vllm`), SmolLM2-135M-Instruct, 272 tensors sent (the tied
LM head travels once, as the embedding), 538 MB fp32, two fresh Ray nodes on this machine again:

    (vllm_sync)    WeightSync.push(learner.ranks, manager, version): the DeepSpeed learner
                   (rayscale.actors.learner.LearnerGroup, 2 ranks, ZeRO-2, fp32, on node0) -> one vLLM rollout worker
                   (bf16 engine in the actor's process, num_cpus=1, node1), bucketed broadcast over gloo, received
                   inside vLLM's worker (SyncWorkerExtension via collective_rpc), sent as bf16 and loaded in place
                   (rayscale.wire.vllm_load.load_in_place: vLLM's weight loaders into the parameters' storage, each
                   linear layer's CPU GEMM re-packed; vLLM's reload_weights where that does not apply); timed end to
                   end on the driver, sync.verify off
    (vllm_raw)     one raw broadcast of a warm flat buffer of the same bytes over the same group: learner rank 0
                   -> the group inside vLLM's worker (`actor.backend.llm.collective_rpc(fn)`; in-process on CPU)

`ratio_vs_raw_vllm` = raw seconds / sync seconds (median of per-round ratios; goal >= 0.8), and the seconds of
each part of a sync, measured inside the worker by timers wrapped around the extension's steps (`vllm.parts`):
the receive wait, the fp32 -> bf16 cast, the load (weight loaders, the linear layers' re-packing), the re-packing
of GEMMs the load left stale (the embedding and the tied LM head sharing it), the rest of the worker's call (collective_rpc, prefix-cache reset) and what lies
outside it (Ray calls, the sender's last broadcasts). A final sync with sync.verify on checks the engine.

    python benchmarks/weight_sync.py [--quick] [--json out.json] [--backend gloo|nccl] [--device cpu|cuda]
                                     [--sections toy,vllm]
    python benchmarks/weight_sync.py --quick --sections toy --device cuda   # one GPU: learner and worker share it
    .venv-vllm/bin/python benchmarks/weight_sync.py --quick      # both sections
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rayscale.config import (  # noqa: E402
    DEFAULT_BUCKET_BYTES,
    AlgoConfig,
    LearnerConfig,
    RoleResources,
    RolloutConfig,
    SyncConfig,
    TinyModelConfig,
    VLLMConfig,
)

VLLM_MISSING = ("vLLM is not importable in this environment: the vLLM section needs .venv-vllm "
                "(`make install-vllm`, then `.venv-vllm/bin/python benchmarks/weight_sync.py`)")


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
    for name, tensor in actor.iter_params_for_sync():
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
    from rayscale.sync.coordinator import WeightSync
    from tests.toy_learner import ToyLearner

    # On GPUs: --backend nccl (a GPU each: two or more), or --device cuda with gloo (both share one GPU; buckets
    # staged through host memory, as a one-GPU run syncs)
    gpu = args.backend == "nccl" or args.device == "cuda"
    if args.backend == "nccl" and torch.cuda.device_count() < 2:
        raise SystemExit("--backend nccl needs 2 GPUs on this machine (NCCL refuses two ranks on one GPU)")
    if gpu and not torch.cuda.is_available():
        raise SystemExit("--device cuda needs a CUDA GPU: torch sees none here")
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
        gpus_per_worker = int(gpu) / args.workers if gpu else 0
        weight_sync = WeightSync(SyncConfig(bucket_size_mb=args.bucket_mb, backend=args.backend, timeout_s=600),
                                 rollout_gpus=gpus_per_worker)
        learner = ray.remote(ToyLearner).options(num_cpus=1, num_gpus=int(gpu), resources={"node0": 0.1}).remote(
            model_dir, device="cuda" if gpu else "cpu", flat_params=True, bucket_bytes=weight_sync.bucket_bytes)
        ray.get(learner.ready.remote())
        manager = RolloutManager(
            model_dir, RolloutConfig(num_workers=args.workers, device="cuda" if gpu else "cpu"),
            resources_cfg=RoleResources(num_cpus=1, num_gpus=gpus_per_worker, resources={"node1": 0.1}),
            dtype="float32")  # as the learner (on a GPU `auto` would be bf16 and the checksums would differ)
        workers = manager.workers
        version = iter(range(1, 10**6))

        def bucketed(zero_copy: bool = True) -> tuple[float, int]:
            ray.get(learner.__ray_call__.remote(_set_zero_copy, zero_copy))
            start = time.perf_counter()
            report = weight_sync.push(learner, manager, next(version))
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
            weight_sync.push(learner, manager, next(version), transport="object_store")
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
        weight_sync.close()
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
        "backend": args.backend, "device": "cuda" if gpu else "cpu", "quick": args.quick, "workers": args.workers,
        "bucket_mb": args.bucket_mb,
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


# ---------------------------------------------------------------- vLLM section: helpers run inside the actors
def _raw_receive_in_vllm(worker, nbytes: int) -> float:
    """Inside vLLM's worker: one broadcast of a warm flat buffer over the worker's sync group."""
    group = worker._rayscale_group
    buf = getattr(worker, "_bench_raw", None)
    if buf is None or buf.numel() != nbytes:
        buf = worker._bench_raw = torch.ones(nbytes, dtype=torch.uint8, device=group.device)
    start = time.perf_counter()
    group.broadcast(buf).wait()
    return time.perf_counter() - start


def _raw_broadcast_vllm(actor, nbytes: int) -> float:
    return actor.backend.llm.collective_rpc(_raw_receive_in_vllm, args=(nbytes,))[0]


def _install_timers(actor) -> None:
    """In the rollout actor (the in-process CPU engine: the actor is vLLM's worker process): wrap the steps of a
    sync with timers; each sync appends its figures to `actor._bench_parts`."""
    import rayscale.wire.vllm_load as ext

    parts: list[dict] = []
    actor._bench_parts = parts
    cur: dict = {}

    def timed_load(load, weights_arg: str):
        """`load` (vLLM's reload_weights or rayscale's load_in_place) timed, and the wait for each weight in it."""
        def timed(*a, **kw):
            def timed_iter(weights):  # time spent getting the next weight: receive wait + cast
                it = iter(weights)
                while True:
                    t = time.perf_counter()
                    try:
                        item = next(it)
                    except StopIteration:
                        cur["receive_and_cast"] = cur.get("receive_and_cast", 0.0) + time.perf_counter() - t
                        return
                    cur["receive_and_cast"] = cur.get("receive_and_cast", 0.0) + time.perf_counter() - t
                    yield item

            if weights_arg in kw:
                kw[weights_arg] = timed_iter(kw[weights_arg])
            else:
                a = (*a[:-1], timed_iter(a[-1]))
            t = time.perf_counter()
            load(*a, **kw)
            cur["reload"] = time.perf_counter() - t

        return timed

    def in_worker(wrapper) -> None:
        worker = getattr(wrapper, "worker", wrapper)  # vLLM's WorkerWrapperBase holds the worker
        runner = worker.model_runner
        runner.reload_weights = timed_load(runner.reload_weights, "weights_iterator")

    actor.backend.llm.collective_rpc(in_worker)
    ext.load_in_place = timed_load(ext.load_in_place, "weights")  # how a CPU engine loads (the extension's call)
    unflatten = ext.BucketLoader.unflatten  # the in-process engine's workers share this process's classes

    def timed_unflatten(*a, **kw):
        t = time.perf_counter()
        out = unflatten(*a, **kw)
        cur["cast"] = cur.get("cast", 0.0) + time.perf_counter() - t
        return out

    ext.BucketLoader.unflatten = timed_unflatten
    refresh = ext.refresh_cpu_gemms

    def timed_refresh(model):
        t = time.perf_counter()
        n = refresh(model)
        cur["gemm_refresh"] = time.perf_counter() - t
        return n

    ext.refresh_cpu_gemms = timed_refresh
    receive = actor.backend.receive_weights

    def timed_receive(version, verify):
        cur.clear()
        t = time.perf_counter()
        out = receive(version, verify)
        cur["worker_call"] = time.perf_counter() - t
        parts.append(dict(cur))
        return out

    actor.backend.receive_weights = timed_receive


def _parts(actor) -> list[dict]:
    return list(actor._bench_parts)


def run_vllm(args) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from rayscale.actors.learner import LearnerGroup
    from rayscale.actors.rollout import RolloutManager
    from rayscale.pretrained import ensure
    from rayscale.sync.coordinator import WeightSync
    from rayscale.wire.receiver import SyncError

    model_dir = str(ensure("smollm2-135m"))
    store = 512 << 20
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"node0": 1},
                                                            "object_store_memory": store})
    cluster.add_node(num_cpus=2, resources={"node1": 1}, object_store_memory=store)
    ray.init(address=cluster.address, log_to_driver=False)
    vllm_cfg = VLLMConfig(dtype=args.vllm_dtype, kv_cache_gb=0.5, max_model_len=512, enforce_eager=True)
    weight_sync = WeightSync(SyncConfig(bucket_size_mb=args.bucket_mb, backend="gloo", verify=False, timeout_s=600))
    try:
        start = time.perf_counter()
        learner_cfg = LearnerConfig(num_ranks=args.vllm_ranks, zero_stage=2, micro_batch_size=4, max_seq_len=96,
                                    collective_timeout_s=600)
        learner = LearnerGroup(model_dir, learner_cfg, AlgoConfig(loss="sigmoid", beta=0.1),
                               RoleResources(num_cpus=1, resources={"node0": 0.1}),
                               bucket_bytes=weight_sync.bucket_bytes)
        learner_start = time.perf_counter() - start
        start = time.perf_counter()
        manager = RolloutManager(model_dir, RolloutConfig(backend="vllm", num_workers=1, vllm=vllm_cfg),
                                 resources_cfg=RoleResources(num_cpus=1, resources={"node1": 0.1}))
        worker_start = time.perf_counter() - start
        worker = manager.workers[0]
        ray.get(worker.__ray_call__.remote(_install_timers))
        version = iter(range(1, 10**6))

        def sync() -> tuple[float, dict]:
            start = time.perf_counter()
            report = weight_sync.push(learner.ranks, manager, next(version))
            return time.perf_counter() - start, report

        first_seconds, report = sync()  # warm-up: forms the group, streams, learns the layout
        nbytes = report["bytes"]

        def raw() -> float:
            start = time.perf_counter()
            ray.get([learner.ranks[0].__ray_call__.remote(_raw_broadcast, nbytes, "sender"),
                     worker.__ray_call__.remote(_raw_broadcast_vllm, nbytes)])
            return time.perf_counter() - start

        raw(), sync()  # warm-up: the raw buffers, the planned path
        times: dict[str, list[float]] = {"vllm_sync": [], "vllm_raw": []}
        sender_seconds: list[float] = []
        for i in range(args.vllm_repeats):  # back-to-back pairs, alternating order
            for name in ("vllm_sync", "vllm_raw") if i % 2 == 0 else ("vllm_raw", "vllm_sync"):
                if name == "vllm_sync":
                    seconds, report = sync()
                    sender_seconds.append(report["seconds"])
                else:
                    seconds = raw()
                times[name].append(seconds)
        parts_all = ray.get(worker.__ray_call__.remote(_parts))[-args.vllm_repeats:]
        # A last sync with sync.verify on: bucket checksums on both sides, then the engine's greedy tokens scored
        # by the learner (rayscale.sync.output_check): the engine computes with the learner's weights.
        weight_sync.verify = True
        try:
            sync()
            verified = True
        except SyncError as e:
            verified = f"failed: {e}"
        tensors = report["tensors"]
        wire_dtype = weight_sync.wire_dtype(manager.workers) or "float32"
        weight_sync.close()
        manager.shutdown()
        learner.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()

    parts = []
    for p, end_to_end, sender in zip(parts_all, times["vllm_sync"], sender_seconds):
        load = p["reload"] - p["receive_and_cast"]  # the load itself, without waiting for the weights
        parts.append({  # the breakdown: wire, cast (receiver side), load, re-pack; then the rest
            "end_to_end": end_to_end,
            "wire": p["receive_and_cast"] - p["cast"],  # waiting for the next bucket on the worker
            "cast": p["cast"],  # on the worker: 0 once the learner sends the engine's dtype
            "load": load,  # the copies into the engine's storage and the re-packing of the linear layers
            "re-pack": p.get("gemm_refresh", 0.0),  # what the load leaves stale (embedding, tied LM head)
            "worker_rest": p["worker_call"] - p["reload"] - p.get("gemm_refresh", 0.0),
            "outside_worker": end_to_end - p["worker_call"],
            "sender_send_weights": sender,
        })
    med_parts = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "model": "SmolLM2-135M-Instruct", "tensors": tensors, "bytes": nbytes, "engine_dtype": args.vllm_dtype,
        "wire_dtype": wire_dtype,  # what the learner sends: the engine's dtype when narrower than fp32
        "learner": {"num_ranks": args.vllm_ranks, "zero_stage": 2, "dtype": "float32"},
        "bucket_mb": args.bucket_mb, "repeats": args.vllm_repeats, "verified": verified,
        "learner_start_seconds": learner_start, "worker_start_seconds": worker_start,
        "first_sync_seconds": first_seconds, "seconds": med, "gbps": {k: nbytes / t / 1e9 for k, t in med.items()},
        "all_seconds": times, "parts": med_parts, "all_parts": parts,
        "ratio_vs_raw_vllm": statistics.median(r / s for s, r in zip(times["vllm_sync"], times["vllm_raw"])),
    }


def _print_toy(res: dict, args) -> None:
    mb = res["model"]["bytes"] / 1e6
    print(f"\nweight sync, {args.backend}, {res['device']}, {mb:.0f} MB in 218 tensors, {args.workers} worker(s) on "
          "another node, "
          f"median of {args.repeats} rounds (ratios: median of per-round ratios)")
    print(f"{'method':<15}{'seconds':>9}{'GB/s':>9}")
    for k in ("raw", "bucketed", "bucketed_copy", "per_tensor", "object_store"):
        print(f"{k:<15}{res['seconds'][k]:>9.3f}{res['gbps'][k]:>9.2f}")
    print(f"ratio_vs_raw = {res['ratio_vs_raw']:.2f} (target >= 0.9; copying every tensor: "
          f"{res['ratio_vs_raw_copy']:.2f})   "
          f"speedup_vs_per_tensor = {res['speedup_vs_per_tensor']:.1f}x (target >= 5)")


def _print_vllm(v: dict) -> None:
    print(f"\nweight sync into vLLM, SmolLM2-135M-Instruct, {v['bytes'] / 1e6:.0f} MB on the wire ({v['wire_dtype']}; "
          f"fp32 learner) in {v['tensors']} tensors, "
          f"DeepSpeed ZeRO-2 learner ({v['learner']['num_ranks']} ranks) -> 1 vLLM worker ({v['engine_dtype']}) on "
          f"another node, gloo, median of {v['repeats']} rounds")
    print(f"{'method':<15}{'seconds':>9}{'GB/s':>9}")
    for k in ("vllm_raw", "vllm_sync"):
        print(f"{k:<15}{v['seconds'][k]:>9.3f}{v['gbps'][k]:>9.2f}")
    print("parts of vllm_sync (medians, seconds):")
    for k, x in v["parts"].items():
        print(f"  {k:<22}{x:>8.3f}")
    print(f"ratio_vs_raw_vllm = {v['ratio_vs_raw_vllm']:.2f} (goal >= 0.8)   final sync with verify: "
          f"{'ok' if v['verified'] is True else v['verified']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="toy: 20M-parameter model, 5 rounds (about a minute); vLLM: 5 rounds (plus about a "
                         "minute of start-up: about 2 minutes in all; the full size about the same)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--backend", choices=["gloo", "nccl"], default="gloo")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="toy section: learner and worker on the CPU, or both on one GPU over gloo "
                         "(--backend nccl puts them on two GPUs)")
    ap.add_argument("--workers", type=int, default=1, help="rollout workers on node1")
    ap.add_argument("--bucket-mb", type=float, default=DEFAULT_BUCKET_BYTES / (1 << 20))
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--sections", default="toy,vllm", help="comma-separated: toy, vllm (default both)")
    ap.add_argument("--vllm-dtype", choices=["bfloat16", "float32"], default="bfloat16")
    ap.add_argument("--vllm-ranks", type=int, default=2, help="DeepSpeed learner ranks of the vLLM section")
    ap.add_argument("--vllm-repeats", type=int, default=None)
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (5 if args.quick else 10)
    args.vllm_repeats = args.vllm_repeats or (5 if args.quick else 10)
    sections = {x.strip() for x in args.sections.split(",") if x.strip()}
    if not sections <= {"toy", "vllm"}:
        ap.error(f"unknown section(s) {sorted(sections - {'toy', 'vllm'})}; expected toy, vllm")
    os.environ.setdefault("RAYSCALE_MODEL_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "models"))
    have_vllm = importlib.util.find_spec("vllm") is not None
    if "vllm" in sections and not have_vllm:
        if sections == {"vllm"}:
            print(f"error: {VLLM_MISSING}", file=sys.stderr)
            return 2
        print(f"note: {VLLM_MISSING}; running the toy-model sections only", file=sys.stderr)
        sections.discard("vllm")
    if "vllm" in sections and args.device == "cuda":
        print("note: the vLLM section has no GPU variant (its engine runs on the CPU); skipped with --device cuda",
              file=sys.stderr)
        sections.discard("vllm")
    if "vllm" in sections and args.backend != "gloo":
        print("note: the vLLM section runs on CPU over gloo; skipped with --backend nccl", file=sys.stderr)
        sections.discard("vllm")
    res: dict = run(args) if "toy" in sections else {}
    if "vllm" in sections:
        res["vllm"] = run_vllm(args)
        res["ratio_vs_raw_vllm"] = res["vllm"]["ratio_vs_raw_vllm"]
    else:
        res["vllm"] = {"skipped": "no GPU variant (the vLLM section runs on the CPU)" if args.device == "cuda" else
                       VLLM_MISSING if not have_vllm else "not run (--sections / --backend)"}
    if "toy" in sections:
        _print_toy(res, args)
    if "vllm" in sections:
        _print_vllm(res["vllm"])
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
