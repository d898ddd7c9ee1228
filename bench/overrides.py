"""`--set model.KEY=VALUE` / `--set train.KEY=VALUE`: spec changes for a variant run.

The variants in docs/evaluation.md that are spec fields (learning rate, epochs,
latent size, dropout, site scaling, ...) are reproduced with the harness itself,
e.g. `python -m bench.evaluate --sections smd --out /tmp/lr --set train.learning_rate=1e-4
--set train.max_epochs=60`. Each value is read as the type of the field's default
(bool: true/false; tuples: comma-separated), and a wrong name or value fails before
anything is trained, naming the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from bench import product
from streamvae.model.specs import ModelSpec, TrainSpec

_SPECS: dict[str, type[ModelSpec] | type[TrainSpec]] = {"model": ModelSpec, "train": TrainSpec}


@dataclass(frozen=True)
class Overrides:
    """Field values that replace the harness's ModelSpec / TrainSpec ones."""

    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.model or self.train)

    def apply_model(self, spec: ModelSpec) -> ModelSpec:
        return product.with_(spec, **self.model)

    def apply_train(self, spec: TrainSpec) -> TrainSpec:
        return product.replace_train(spec, **self.train)

    def describe(self) -> str:
        """`model.latent_dim=4, train.learning_rate=0.0001` (in the RESULTS header)."""
        return ", ".join(
            f"{part}.{k}={v!r}"
            for part, values in (("model", self.model), ("train", self.train))
            for k, v in values.items()
        )


def _convert(default: object, text: str, name: str) -> Any:
    if isinstance(default, bool):
        if text.lower() not in ("true", "false"):
            raise ValueError(f"{name}: expected true or false, got {text!r}")
        return text.lower() == "true"
    try:
        if isinstance(default, tuple):
            return tuple(int(p) for p in text.split(",") if p.strip())
        if isinstance(default, int | float):
            return type(default)(text)
    except ValueError:
        raise ValueError(f"{name}: expected {type(default).__name__}, got {text!r}") from None
    return text


def parse(items: Sequence[str]) -> Overrides:
    """Parse `model.KEY=VALUE` / `train.KEY=VALUE` items; raise ValueError naming the field."""
    values: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        part, dot, key = name.partition(".")
        if not sep or not dot or part not in _SPECS:
            raise ValueError(f"--set {item!r}: expected model.KEY=VALUE or train.KEY=VALUE")
        cls = _SPECS[part]
        defaults = {f.name: getattr(cls(), f.name) for f in fields(cls)}
        if key not in defaults:
            raise ValueError(f"--set {name}: {cls.__name__} has no field {key!r}")
        if name == "train.seed":
            raise ValueError("--set train.seed: the harness sets the seeds (use --seed)")
        values[part][key] = _convert(defaults[key], text.strip(), name)
    out = Overrides(model=values["model"], train=values["train"])
    out.apply_model(ModelSpec())  # the specs' own checks (decoder kind, sizes), up front
    out.apply_train(TrainSpec())
    return out
