"""The exception tree of streamvae.

    StreamvaeError                 root; never raised itself
    ├── ConfigError                bad configuration: fatal, exit code 2
    ├── ArtifactError              a model artifact is missing, tampered or incompatible:
    │                              fatal for `score`, not retriable; the daemon rejects
    │                              the version and keeps serving the current one
    ├── StoreError                 the model store cannot be read or written (permissions,
    │   │                          disk): fatal
    │   └── StoreLockedError       another retrainer holds the store lock: retriable later
    ├── TrainingError              training could not produce a usable model (no data,
    │                              all batches non-finite): not retriable with the same data
    ├── NotReadyError              no model is loaded yet: retriable (wait for a model)
    └── TransientError             broker or network outage: retriable with backoff

Bad input records are data, not exceptions: they become dead letters with a
reason code (see `streamvae.records.Reason`).
"""

from __future__ import annotations


class StreamvaeError(Exception):
    """Root of all streamvae errors."""

    retriable: bool = False


class ConfigError(StreamvaeError):
    """The configuration is invalid; the message names the field."""


class ArtifactError(StreamvaeError):
    """A model artifact is missing, tampered with, or incompatible."""


class StoreError(StreamvaeError):
    """The model store cannot be read or written."""


class StoreLockedError(StoreError):
    """Another process holds the store's writer lock."""

    retriable = True


class TrainingError(StreamvaeError):
    """Training could not produce a usable model."""


class NotReadyError(StreamvaeError):
    """No model is loaded yet."""

    retriable = True


class TransientError(StreamvaeError):
    """A transient outage (broker, network); retry with backoff."""

    retriable = True
