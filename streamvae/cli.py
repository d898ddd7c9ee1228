"""Command line: `streamvae <command>`. Configures logging; everything else is delegated.

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad configuration.
Handlers import their modules lazily so `check-config` stays fast (no torch).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from streamvae import __version__
from streamvae.errors import ConfigError, StreamvaeError

if TYPE_CHECKING:
    from streamvae.config import Settings

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _settings(args: argparse.Namespace) -> Settings:
    from streamvae.config import load_settings

    settings = load_settings(args.config)
    _configure_logging(settings.service.log_level)
    return settings


def cmd_check_config(args: argparse.Namespace) -> int:
    from streamvae.config import load_settings, masked_dict

    settings = load_settings(args.config)
    print(json.dumps(masked_dict(settings), indent=2, sort_keys=False))
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from streamvae.offline import train_command

    rc: int = train_command(_settings(args), [Path(p) for p in args.data], Path(args.out))
    return rc


def cmd_score(args: argparse.Namespace) -> int:
    from streamvae.offline import score_command

    _configure_logging()
    rc: int = score_command(args.model, [Path(p) for p in args.data], args.out, args.device)
    return rc


def cmd_run(args: argparse.Namespace) -> int:
    from streamvae.app import run_command

    rc: int = run_command(_settings(args), input_path=args.input, output_path=args.output)
    return rc


def cmd_worker(args: argparse.Namespace) -> int:
    from streamvae.workers import worker_command

    rc: int = worker_command(args.index, args.fd, args.bootstrap)
    return rc


def cmd_produce(args: argparse.Namespace) -> int:
    from streamvae.kafka import produce_command

    rc: int = produce_command(_settings(args), [Path(p) for p in args.data], args.topic)
    return rc


def cmd_models(args: argparse.Namespace) -> int:
    from streamvae.artifacts import models_command

    _configure_logging()
    store = args.store or _settings(args).store.path
    rc: int = models_command(Path(store), args.action, getattr(args, "version", None))
    return rc


def cmd_retrain(args: argparse.Namespace) -> int:
    from streamvae.retrainer import retrain_command

    rc: int = retrain_command(_settings(args))
    return rc


def cmd_demo(args: argparse.Namespace) -> int:
    from streamvae.demo import demo_command

    _configure_logging("WARNING" if not args.no_ui else "INFO")
    rc: int = demo_command(args)
    return rc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamvae", description=__doc__)
    parser.add_argument("--version", action="version", version=f"streamvae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.set_defaults(func=func)
        return p

    p = add("check-config", cmd_check_config, "validate and print the effective config (masked)")
    p.add_argument("--config", required=False)

    p = add("train", cmd_train, "train a model offline on JSONL/CSV files into a store")
    p.add_argument("--config", required=False)
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--out", required=True, help="model store directory")

    p = add("score", cmd_score, "score JSONL/CSV files with a stored model")
    p.add_argument("--model", required=True, help="STORE or STORE/VERSION")
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--out", required=True, help="output JSONL path, or - for stdout")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])

    p = add("run", cmd_run, "run the streaming daemon (Kafka, or a file/stdin replay)")
    p.add_argument("--config", required=False)
    p.add_argument("--input", default=None, help="JSONL file or - (stdin) instead of Kafka")
    p.add_argument("--output", default=None, help="JSONL file or - (stdout) instead of Kafka")

    p = add("worker", cmd_worker, "internal: a serving worker process of `run` (service.workers)")
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--fd", type=int, required=True, help="pipe to report to the daemon on")
    p.add_argument("--bootstrap", required=True, help="the daemon's resolved Kafka address")

    p = add("produce", cmd_produce, "publish a JSONL/CSV file to a Kafka topic")
    p.add_argument("--config", required=False)
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--topic", default=None, help="default: [kafka] input_topic")

    p = add("models", cmd_models, "list, promote or roll back model versions")
    p.add_argument("--config", required=False)
    p.add_argument("--store", default=None, help="default: [store] path")
    msub = p.add_subparsers(dest="action", required=True)
    msub.add_parser("list")
    msub.add_parser("promote").add_argument("version")
    msub.add_parser("rollback")

    p = add("retrain", cmd_retrain, "run one retraining pass now (singleton, for cron/timers)")
    p.add_argument("--config", required=False)

    p = add("demo", cmd_demo, "the whole product on an embedded broker with simulated sites")
    p.add_argument("--duration", type=float, default=150.0, help="seconds")
    p.add_argument("--sites", type=int, default=5)
    p.add_argument("--rate", type=float, default=200.0, help="records/s over all sites")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-ui", action="store_true", help="log lines instead of the live view")
    p.add_argument("--workdir", default=None, help="default: a temporary directory")
    p.add_argument("--plot", default=None, help="write a PNG timeline here")
    p.add_argument(
        "--offline", action="store_true", help="no broker: simulated time, scored in-process"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except ConfigError as exc:
        print(f"streamvae: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StreamvaeError as exc:
        print(f"streamvae: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
