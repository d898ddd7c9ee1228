"""bench.overrides: `--set model.KEY=VALUE` / `train.KEY=VALUE` for variant runs (pure)."""

from __future__ import annotations

import pytest

from bench.evaluate import main
from bench.overrides import Overrides, parse
from streamvae.model.specs import ModelSpec, TrainSpec


def test_values_take_the_type_of_the_field() -> None:
    ov = parse(
        [
            "train.learning_rate=1e-4",
            "train.max_epochs=60",
            "model.site_scaling=true",
            "model.hidden=64,32",
            "model.prior=standard",
        ]
    )
    train = ov.apply_train(TrainSpec(seed=3, max_epochs=30))
    assert (train.learning_rate, train.max_epochs, train.seed) == (1e-4, 60, 3)
    model = ov.apply_model(ModelSpec())
    assert (model.site_scaling, model.hidden, model.prior) == (True, (64, 32), "standard")
    assert ov.describe() == (
        "model.site_scaling=True, model.hidden=(64, 32), model.prior='standard', "
        "train.learning_rate=0.0001, train.max_epochs=60"
    )


def test_no_overrides_changes_nothing() -> None:
    ov = parse([])
    assert not ov
    assert ov == Overrides()
    assert ov.apply_model(ModelSpec()) == ModelSpec()


@pytest.mark.parametrize(
    ("item", "names"),
    [
        ("train.learning_rate", "model.KEY=VALUE"),
        ("optim.lr=1", "model.KEY=VALUE"),
        ("model.latent=4", "no field 'latent'"),
        ("train.max_epochs=ten", "train.max_epochs: expected int"),
        ("model.site_scaling=yes", "model.site_scaling: expected true or false"),
        ("train.seed=1", "use --seed"),
        ("model.decoder=laplace", "unknown decoder"),
    ],
)
def test_a_bad_item_fails_naming_the_field(item: str, names: str) -> None:
    with pytest.raises(ValueError, match=names):
        parse([item])


def test_the_harness_refuses_a_bad_item_before_any_work(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--set", "train.max_epochs=ten", "--data", "/nonexistent"])
    assert exc.value.code == 2
    assert "train.max_epochs: expected int" in capsys.readouterr().err
