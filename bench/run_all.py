"""`make bench` entry: the evaluation harness, then the throughput benches if present.

    PYTHONPATH=. python -m bench.run_all [--quick] [other bench.evaluate options]

bench.evaluate gets every argument. bench.model_throughput, bench.throughput and bench.soak
(owned by other engineers) run afterwards in subprocesses when they exist, with
`--quick` passed on when given and their source accepts it (BENCH_QUICK=1 is set
for them either way); a missing module is skipped, a failing one is reported and
makes the exit status non-zero.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from bench import evaluate

log = logging.getLogger("bench.run_all")

OTHERS = ("bench.model_throughput", "bench.throughput", "bench.soak")


def _run_other(module: str, quick: bool) -> int:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        log.info("skipping %s (not present)", module)
        return 0
    args = [sys.executable, "-m", module]
    if quick and "--quick" in Path(spec.origin).read_text(encoding="utf-8"):
        args.append("--quick")
    env = dict(os.environ, BENCH_QUICK="1" if quick else "0")
    log.info("running %s", " ".join(args))
    rc = subprocess.call(args, env=env)
    if rc:
        log.error("%s exited with %d", module, rc)
    return rc


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rc = evaluate.main(argv)
    quick = "--quick" in argv
    for module in OTHERS:
        rc = _run_other(module, quick) or rc
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
