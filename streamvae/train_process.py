"""Training in a separate process (`retraining.mode = "process"`), without pickled data.

The parent writes the job into a private temporary directory — `job.npz` (numpy
arrays, read back with allow_pickle=False) and `job.json` (store path, features,
spec dictionaries) — and starts a multiprocessing *spawn* child whose only
arguments are that directory's path and the parent's pid. The child trains,
saves the candidate into the store itself, gates it, and writes `result.json`
(version, verdict, training report) atomically. No model, and no pickled
payload, crosses the boundary.

The child exits by itself when its parent dies (even by SIGKILL): a watchdog
thread polls `os.getppid()`. A child that dies leaves no `result.json`; the
parent reports the pass as failed. A half-trained candidate is never saved, and
a saved but unjudged one is never promoted (the parent promotes).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import multiprocessing.process
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamvae.errors import TrainingError
from streamvae.gate import GateSpec
from streamvae.retrain_job import CandidateResult, TrainingJob, train_candidate
from streamvae.state import atomic_write

log = logging.getLogger(__name__)

_ARRAYS = ("train_values", "train_sites", "holdout_values", "holdout_sites")


def write_job(job: TrainingJob, directory: Path) -> None:
    """Serialise `job` into `directory` (job.npz + job.json)."""
    np.savez(directory / "job.npz", **{name: getattr(job, name) for name in _ARRAYS})
    meta = {
        "store_root": job.store_root,
        "features": list(job.features),
        "model_spec": job.model_spec.to_dict(),
        "train_spec": job.train_spec.to_dict(),
        "threshold_spec": job.threshold_spec.to_dict(),
        "gate_spec": dataclasses.asdict(job.gate_spec),
        "device": job.device,
        "trigger": job.trigger,
        "threads": job.threads,
    }
    (directory / "job.json").write_text(json.dumps(meta), encoding="utf-8")


def read_job(directory: Path) -> TrainingJob:
    from streamvae.model.specs import ModelSpec, ThresholdSpec, TrainSpec

    meta = json.loads((directory / "job.json").read_text(encoding="utf-8"))
    with np.load(directory / "job.npz", allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in _ARRAYS}
    return TrainingJob(
        store_root=meta["store_root"],
        features=tuple(meta["features"]),
        model_spec=ModelSpec.from_dict(meta["model_spec"]),
        train_spec=TrainSpec.from_dict(meta["train_spec"]),
        threshold_spec=ThresholdSpec.from_dict(meta["threshold_spec"]),
        gate_spec=GateSpec(**meta["gate_spec"]),
        device=meta["device"],
        trigger=meta["trigger"],
        threads=int(meta.get("threads", 0)),
        **arrays,
    )


def _result_to_json(result: CandidateResult) -> bytes:
    return json.dumps(dataclasses.asdict(result), default=str).encode()


def _result_from_json(data: bytes) -> CandidateResult:
    d: dict[str, Any] = json.loads(data)
    if d.get("error"):
        raise TrainingError(f"training process failed: {d['error']}")
    d["sites"] = tuple(d.get("sites", ()))
    return CandidateResult(**d)


def _exit_with_parent(parent: int) -> None:
    """Child side: leave as soon as the parent is gone (even after a SIGKILL)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(3)


def child_main(job_dir: str, parent: int) -> None:
    """Entry point of the spawned training process: one job, one result file."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    directory = Path(job_dir)
    try:
        job = read_job(directory)
        if job.threads > 0:
            import torch

            torch.set_num_threads(job.threads)
        out = _result_to_json(train_candidate(job))
    except Exception as exc:  # reported to the parent, which logs the pass as failed
        log.exception("training process failed")
        out = json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode()
    atomic_write(directory / "result.json", out)


class ChildHandle:
    """The running training process, so that a shutdown can kill it."""

    def __init__(self) -> None:
        self.process: multiprocessing.process.BaseProcess | None = None

    def kill(self) -> None:
        p = self.process
        if p is not None and p.is_alive():
            log.warning("killing training process %s", p.pid)
            p.kill()


def train_in_process(job: TrainingJob, handle: ChildHandle | None = None) -> CandidateResult:
    """`train_candidate` in a spawned child; raises TrainingError if it dies or fails."""
    directory = Path(tempfile.mkdtemp(prefix="streamvae-job-"))
    try:
        write_job(job, directory)
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(
            target=child_main,
            args=(str(directory), os.getpid()),
            name="streamvae-train",
            daemon=True,
        )
        proc.start()
        if handle is not None:
            handle.process = proc
        proc.join()
        result = directory / "result.json"
        if not result.exists():
            raise TrainingError(f"training process died (exit code {proc.exitcode})")
        return _result_from_json(result.read_bytes())
    finally:
        shutil.rmtree(directory, ignore_errors=True)
