"""The model store: versioned detector artifacts, atomic promotion, rollback, lock.

Layout under the store root::

    versions/<version>/          one artifact (see `streamvae.artifact_format`)
    rejected/<version>/          a rejected version, moved here, with reason.json
    CURRENT                      JSON {"current": v | null, "history": [previously current…]}
    .lock                        fcntl writer lock, taken by `store.lock()`
    .tmp/                        staging for atomic saves

`save` writes into .tmp/, fsyncs and renames the directory into versions/
(atomic on POSIX). `promote` / `rollback` rewrite CURRENT through a temp file,
fsync and `os.replace`. Readers (the daemon) need no lock; writers (train,
retrainer, `models promote/rollback`) that must be singletons hold `lock()`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from streamvae.artifact_format import new_version, read_artifact, write_artifact
from streamvae.detector import Detector
from streamvae.errors import ArtifactError, StoreError, StoreLockedError

__all__ = ["ModelStore", "models_command", "new_version"]

log = logging.getLogger(__name__)


class ModelStore:
    """A directory of detector versions with a promoted "current" pointer."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.rejected_dir = self.root / "rejected"
        self.tmp_dir = self.root / ".tmp"
        self.pointer = self.root / "CURRENT"

    def _ensure(self) -> None:
        try:
            for d in (self.versions_dir, self.rejected_dir, self.tmp_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create model store at {self.root}: {exc}") from exc

    # -- reading ---------------------------------------------------------------
    def versions(self) -> list[str]:
        """Saved (not rejected) versions, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if p.is_dir())

    def rejected(self) -> dict[str, str]:
        """Rejected versions -> reason."""
        out: dict[str, str] = {}
        if self.rejected_dir.is_dir():
            for p in sorted(self.rejected_dir.iterdir()):
                try:
                    out[p.name] = str(json.loads((p / "reason.json").read_text())["reason"])
                except (OSError, ValueError, KeyError):
                    out[p.name] = "?"
        return out

    def _state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.pointer.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"current": None, "history": []}
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.pointer}: unreadable: {exc}") from exc
        if not isinstance(state, dict):
            raise StoreError(f"{self.pointer}: not a JSON object")
        return {"current": state.get("current"), "history": list(state.get("history", []))}

    def current(self) -> str | None:
        """The promoted version, or None."""
        cur = self._state()["current"]
        return str(cur) if cur is not None else None

    def load(self, version: str | None = None, device: str = "cpu") -> Detector:
        """Load `version` (default: current). Raises ArtifactError (missing/invalid)."""
        v = version if version is not None else self.current()
        if v is None:
            raise ArtifactError(f"{self.root}: no current model (nothing promoted yet)")
        path = self.versions_dir / v
        if not path.is_dir():
            raise ArtifactError(f"{self.root}: no version {v!r}")
        det = read_artifact(path, device)
        if det.version != v:
            raise ArtifactError(f"{path}: metadata says version {det.version!r}")
        return det

    # -- writing ---------------------------------------------------------------
    def save(self, detector: Detector) -> str:
        """Atomically add `detector` as version `detector.version`; returns it."""
        self._ensure()
        v = detector.version
        if not v or "/" in v or v.startswith("."):
            raise StoreError(f"invalid version name {v!r}")
        final = self.versions_dir / v
        if final.exists() or (self.rejected_dir / v).exists():
            raise StoreError(f"version {v!r} already exists in {self.root}")
        staging = Path(tempfile.mkdtemp(prefix=f"{v}.", dir=self.tmp_dir))
        try:
            write_artifact(detector, staging)
            os.rename(staging, final)
            _fsync_dir(self.versions_dir)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise StoreError(f"cannot save version {v!r}: {exc}") from exc
        log.info("saved model version %s", v)
        return v

    def new_version(self, now: float | None = None) -> str:
        """A fresh version name later than every existing one."""
        v = new_version(now)
        existing = self.versions() + list(self.rejected())
        while existing and v <= max(existing):
            v = new_version(_parse(max(existing)) + 1e-6)
        return v

    def promote(self, version: str) -> None:
        """Make `version` current (atomic pointer swap); the old one goes on the history."""
        if not (self.versions_dir / version).is_dir():
            raise StoreError(f"cannot promote unknown version {version!r}")
        state = self._state()
        if state["current"] == version:
            return
        hist = [h for h in state["history"] if h != version]
        if state["current"] is not None:
            hist.append(state["current"])
        self._write_state({"current": version, "history": hist})
        log.info("promoted model version %s", version)

    def rollback(self) -> str:
        """Make the previously current version current again; returns it."""
        state = self._state()
        hist = [h for h in state["history"] if (self.versions_dir / h).is_dir()]
        if not hist:
            raise StoreError("nothing to roll back to")
        prev = str(hist.pop())
        self._write_state({"current": prev, "history": hist})
        log.info("rolled back from %s to %s", state["current"], prev)
        return prev

    def reject(self, version: str, reason: str) -> None:
        """Move `version` to rejected/ with its reason (kept for inspection)."""
        self._ensure()
        src = self.versions_dir / version
        if not src.is_dir():
            raise StoreError(f"cannot reject unknown version {version!r}")
        state = self._state()
        if state["current"] == version:
            raise StoreError(f"refusing to reject the current version {version!r}; roll back first")
        dst = self.rejected_dir / version
        try:
            os.rename(src, dst)
            body = {"reason": reason, "rejected_at": time.time()}
            (dst / "reason.json").write_text(json.dumps(body), encoding="utf-8")
        except OSError as exc:
            raise StoreError(f"cannot reject {version!r}: {exc}") from exc
        if version in state["history"]:
            state["history"] = [h for h in state["history"] if h != version]
            self._write_state(state)
        log.warning("rejected model version %s: %s", version, reason)

    def _write_state(self, state: dict[str, Any]) -> None:
        self._ensure()
        fd, tmp = tempfile.mkstemp(prefix="CURRENT.", dir=self.tmp_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(state, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.pointer)
            _fsync_dir(self.root)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise StoreError(f"cannot update {self.pointer}: {exc}") from exc

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive writer lock (non-blocking). Raises StoreLockedError when held."""
        self._ensure()
        fh = (self.root / ".lock").open("a+")
        try:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise StoreLockedError(f"{self.root}: another writer holds the lock") from exc
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        finally:
            fh.close()


def _parse(version: str) -> float:
    import calendar

    stamp, micros = version[1:].split("-")
    return calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%S")) + int(micros) / 1e6


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def models_command(store: Path, action: str, version: str | None) -> int:
    """`streamvae models list|promote V|rollback`. Returns an exit code."""
    ms = ModelStore(store)
    if action == "list":
        cur = ms.current()
        for v in ms.versions():
            print(f"{'*' if v == cur else ' '} {v}")
        for v, reason in ms.rejected().items():
            print(f"x {v}  rejected: {reason}")
        return 0
    with ms.lock():
        if action == "promote":
            if version is None:
                print("streamvae models promote: VERSION required", file=sys.stderr)
                return 2
            ms.load(version)  # validate before pointing the daemon at it
            ms.promote(version)
            print(version)
            return 0
        if action == "rollback":
            print(ms.rollback())
            return 0
    print(f"unknown action {action!r}", file=sys.stderr)
    return 2
