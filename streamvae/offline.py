"""Offline commands: `streamvae train` and `streamvae score`. Composition root for files.

`train_command` reads JSONL/CSV record files, trains a detector on them (all
records are taken as normal), saves it to a model store and promotes it.
`score_command` scores files with a stored model and writes one JSON line per
input record, in input order: a score record (`records.encode_score`, the same
serving rules as the daemon: `outputs.build_scores`), or for a record that
cannot be scored its dead letter (`records.encode_dead_letter`: reason, detail,
site, position = {topic: <file>, partition: 0, offset: <line>}, payload). Bad
records are never fatal.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from streamvae import files
from streamvae.errors import StoreError, TrainingError
from streamvae.model.specs import ModelSpec, ThresholdSpec, TrainSpec
from streamvae.outputs import build_scores, stack_values
from streamvae.records import (
    DeadLetter,
    DecoderSpec,
    Rejection,
    ScoreRecord,
    SensorRecord,
    encode_dead_letter,
    encode_score,
)

log = logging.getLogger(__name__)

SCORE_BATCH = 4096


def specs_from_settings(settings: Any) -> tuple[ModelSpec, TrainSpec, ThresholdSpec]:
    """The [model], [training] and [threshold] sections as plain specs."""
    m, t, th = settings.model, settings.training, settings.threshold
    model = ModelSpec(
        decoder=m.decoder,
        prior=m.prior,
        conditional=m.conditional,
        latent_dim=m.latent_dim,
        hidden=tuple(m.hidden),
        discriminator_hidden=tuple(m.discriminator_hidden),
        site_embedding_dim=m.site_embedding_dim,
        site_capacity=m.site_capacity,
        importance_samples=m.importance_samples,
        loglik_samples=m.loglik_samples,
        scale_floor=m.scale_floor,
        site_scaling=m.site_scaling,
    )
    train = TrainSpec(
        seed=t.seed,
        max_epochs=t.max_epochs,
        batch_size=t.batch_size,
        learning_rate=t.learning_rate,
        discriminator_learning_rate=t.discriminator_learning_rate,
        vae_epochs_per_cycle=t.vae_epochs_per_cycle,
        discriminator_epochs_per_cycle=t.discriminator_epochs_per_cycle,
        kl_warmup_epochs=t.kl_warmup_epochs,
        patience=t.patience,
        validation_fraction=t.validation_fraction,
        grad_clip=t.grad_clip,
        site_dropout=t.site_dropout,
        spike_sd=t.spike_sd,
    )
    thresh = ThresholdSpec(
        false_positive_rate=th.false_positive_rate,
        min_site_records=th.min_site_records,
        pot=th.pot,
    )
    return model, train, thresh


def _decoder_spec(settings: Any, features: Sequence[str]) -> DecoderSpec:
    i = settings.input
    return DecoderSpec(
        features=tuple(features),
        unknown_feature=i.unknown_feature,
        max_message_bytes=i.max_message_bytes,
        max_site_length=i.max_site_length,
    )


def train_command(settings: Any, data_paths: Sequence[Path], out_store: Path) -> int:
    """Train on `data_paths`, save into `out_store`, promote, print the version."""
    from streamvae.artifacts import ModelStore
    from streamvae.detector import train_detector

    if not data_paths:
        raise TrainingError("no data files given")
    features = tuple(settings.model.features) or files.infer_features(str(data_paths[0]))
    if not features:
        raise TrainingError(f"{data_paths[0]}: cannot infer feature names")
    spec = _decoder_spec(settings, features)
    values: list[Sequence[float]] = []
    sites: list[str] = []
    rejected: Counter[str] = Counter()
    for path in data_paths:
        for item in files.read_records(str(path), spec):
            if isinstance(item, SensorRecord):
                values.append(item.values)
                sites.append(item.site)
            else:
                rejected[str(item.reason)] += 1
    if rejected:
        log.warning("skipped %d bad records: %s", sum(rejected.values()), dict(rejected))
    if not values:
        raise TrainingError("no valid records in the training data")
    mspec, tspec, thspec = specs_from_settings(settings)
    store = ModelStore(out_store)
    with store.lock():
        version = store.new_version()
        det = train_detector(
            np.asarray(values, dtype=np.float32),
            sites,
            features=features,
            model_spec=mspec,
            train_spec=tspec,
            threshold_spec=thspec,
            device=settings.model.device,
            version=version,
        )
        store.save(det)
        store.promote(version)
    r = det.report
    log.info(
        "trained %s on %d records, %d sites: %d epochs, best val loss %.4f, %.1fs",
        version,
        len(values),
        len(det.sites),
        r.epochs,
        r.best_val_loss,
        r.wall_s,
    )
    print(version)
    return 0


def resolve_model_ref(model_ref: str) -> tuple[Path, str | None]:
    """ "STORE" -> (STORE, None = current); "STORE/VERSION" or "STORE/versions/VERSION"."""
    path = Path(model_ref)
    if (path / "versions").is_dir() or (path / "CURRENT").exists():
        return path, None
    if path.parent.name == "versions":
        return path.parent.parent, path.name
    if (path.parent / "versions").is_dir():
        return path.parent, path.name
    raise StoreError(f"{model_ref}: not a model store or STORE/VERSION")


def score_command(model_ref: str, data_paths: Sequence[Path], out: str, device: str) -> int:
    """Score `data_paths` with the model at `model_ref`; one JSON line per input record."""
    from streamvae.artifacts import ModelStore

    root, version = resolve_model_ref(model_ref)
    det = ModelStore(root).load(version, device=device)
    spec = DecoderSpec(features=det.features)
    n_scored = n_bad = 0
    with _open_out(out) as fh:
        for path in data_paths:
            for chunk in _chunks(files.read_records(str(path), spec), SCORE_BATCH):
                lines, scored, bad = _score_chunk(det, chunk)
                fh.write(b"".join(lines))
                n_scored, n_bad = n_scored + scored, n_bad + bad
    log.info("scored %d records with %s; %d bad records", n_scored, det.version, n_bad)
    return 0


def _chunks(
    items: Iterable[SensorRecord | Rejection], n: int
) -> Iterator[list[SensorRecord | Rejection]]:
    chunk: list[SensorRecord | Rejection] = []
    for it in items:
        chunk.append(it)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _score_chunk(det: Any, chunk: list[SensorRecord | Rejection]) -> tuple[list[bytes], int, int]:
    """Output lines for one chunk, in input order (serving rules of `outputs.build_scores`)."""
    recs = [r for r in chunk if isinstance(r, SensorRecord)]
    scored: list[ScoreRecord] = []
    failed: list[Rejection] = []
    if recs:
        values = stack_values(recs)
        rows = build_scores(
            recs,
            values,
            det.score(values, [r.site for r in recs]),
            features=det.features,
            model_version=det.version,
            top=0,
            scored_at=0.0,
        )
        scored, failed = rows.score_records(), rows.rejections
    fail_of = {id(recs[i]): f for i, f in _failed_rows(recs, failed)}
    lines: list[bytes] = []
    it = iter(scored)
    for item in chunk:
        if isinstance(item, SensorRecord):
            rej = fail_of.get(id(item))
            lines.append(_reject_line(rej) if rej is not None else encode_score(next(it)) + b"\n")
        else:
            lines.append(_reject_line(item))
    return lines, len(recs) - len(failed), len(chunk) - len(recs) + len(failed)


def _failed_rows(recs: list[SensorRecord], failed: list[Rejection]) -> list[tuple[int, Rejection]]:
    """Match scoring failures back to record indices (both lists are in input order)."""
    out: list[tuple[int, Rejection]] = []
    j = 0
    for i, r in enumerate(recs):
        if j < len(failed) and failed[j].position == r.position and failed[j].site == r.site:
            out.append((i, failed[j]))
            j += 1
    return out


def _reject_line(rej: Rejection) -> bytes:
    letter = DeadLetter(
        reason=rej.reason,
        detail=rej.detail,
        payload=rej.payload,
        position=rej.position,
        site=rej.site,
    )
    return encode_dead_letter(letter) + b"\n"


@contextlib.contextmanager
def _open_out(out: str) -> Iterator[IO[bytes]]:
    if out == "-":
        yield sys.stdout.buffer
        sys.stdout.flush()
        return
    with open(out, "wb") as fh:
        yield fh
