"""`fit`: train the VAE and the discriminator T by alternating epochs.

Each cycle: `vae_epochs_per_cycle` VAE epochs (Adam, lr `learning_rate`, T frozen),
then — for the optimal prior — `discriminator_epochs_per_cycle` discriminator
epochs (Adam, lr `discriminator_learning_rate`, VAE frozen; positives z ~ q(z) from
the training records' posteriors, negatives z ~ N(0, I)). `max_epochs` counts VAE
epochs. Stability: KL warm-up (β rises linearly to 1 over `kl_warmup_epochs`;
skipped on warm start), gradient-norm clipping, batches with non-finite inputs,
loss or gradients are skipped and counted, early stopping on the validation
negative ELBO (β = 1, fixed noise) with `patience`, restoring the best weights.
Deterministic given `seed` (and the same device / thread count).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from streamvae.errors import TrainingError
from streamvae.model.objective import elbo_terms
from streamvae.model.prior import Discriminator, discriminator_loss
from streamvae.model.report import EpochStats, TrainingReport, quantiles, spike_flags, unresolved
from streamvae.model.specs import ModelSpec, TrainSpec
from streamvae.model.vae import VAE

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True, slots=True)
class FitResult:
    vae: VAE  # eval mode, best weights
    disc: Discriminator | None  # None for the standard prior
    report: TrainingReport


def build(
    n_features: int, spec: ModelSpec, device: torch.device
) -> tuple[VAE, Discriminator | None]:
    """Fresh networks (uses the global torch RNG: seed it first)."""
    vae = VAE(n_features, spec).to(device)
    disc = None
    if spec.prior == "optimal":
        disc = Discriminator(
            spec.latent_dim, spec.discriminator_hidden, spec.discriminator_dropout
        ).to(device)
    return vae, disc


def fit(
    x_train: npt.NDArray[np.float32],
    s_train: npt.NDArray[np.int64],
    x_val: npt.NDArray[np.float32],
    s_val: npt.NDArray[np.int64],
    *,
    model_spec: ModelSpec,
    train_spec: TrainSpec,
    device: torch.device,
    init: tuple[StateDict, StateDict | None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> FitResult:
    """x_*: (N, D) standardized float32; s_*: (N,) site slots. Returns the best model.

    `init` = (vae state dict, discriminator state dict) for a warm start (shapes must
    match `model_spec`). Raises `TrainingError` when no batch could be used.
    """
    if len(x_train) == 0 or len(x_val) == 0:
        raise TrainingError("need at least one training and one validation record")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_spec.seed)
        data = (x_train, s_train, x_val, s_val)
        trainer = _Trainer(
            data, mspec=model_spec, tspec=train_spec, device=device, init=init, clock=clock
        )
        return trainer.run()


class _Trainer:
    def __init__(
        self,
        data: tuple[
            npt.NDArray[np.float32],
            npt.NDArray[np.int64],
            npt.NDArray[np.float32],
            npt.NDArray[np.int64],
        ],
        *,
        mspec: ModelSpec,
        tspec: TrainSpec,
        device: torch.device,
        init: tuple[StateDict, StateDict | None] | None,
        clock: Callable[[], float],
    ) -> None:
        x_train, s_train, x_val, s_val = data
        self.m, self.t, self.device, self.clock = mspec, tspec, device, clock
        self.rng = np.random.default_rng(tspec.seed)
        self.xt = torch.as_tensor(x_train, dtype=torch.float32, device=device)
        self.st = torch.as_tensor(s_train, dtype=torch.int64, device=device)
        self.xv = torch.as_tensor(x_val, dtype=torch.float32, device=device)
        self.sv = torch.as_tensor(s_val, dtype=torch.int64, device=device)
        self.vae, self.disc = build(x_train.shape[1], mspec, device)
        self.warm = init is not None
        if init is not None:
            self.vae.load_state_dict(init[0])
            if self.disc is not None and init[1] is not None:
                self.disc.load_state_dict(init[1])
        self.opt = torch.optim.Adam(self.vae.parameters(), lr=tspec.learning_rate)
        self.dopt = (
            torch.optim.Adam(self.disc.parameters(), lr=tspec.discriminator_learning_rate)
            if self.disc is not None
            else None
        )
        self.val_eps = torch.randn(len(x_val), mspec.latent_dim, device=device)
        self.warmup = 0 if self.warm else tspec.kl_warmup_epochs

    def beta(self, epoch: int) -> float:
        return min(1.0, (epoch + 1) / (self.warmup + 1))

    def run(self) -> FitResult:
        t0 = self.clock()
        history: list[EpochStats] = []
        losses: list[float] = []
        best: tuple[float, int, StateDict, StateDict | None] | None = None
        since_best = 0
        stopped_early = False
        for epoch in range(self.t.max_epochs):
            e0 = self.clock()
            beta = self.beta(epoch)
            sums, gnorms, nan = self.vae_epoch(beta)
            if not gnorms:
                raise TrainingError(f"epoch {epoch}: every batch was non-finite; nothing to learn")
            dloss, dacc = (None, None)
            if self.disc is not None and (epoch + 1) % self.t.vae_epochs_per_cycle == 0:
                dloss, dacc = self.disc_epochs()
            val = self.validate()
            losses.append(sums["loss"])
            flags = spike_flags(losses, self.t.spike_sd, start=self.warmup)
            history.append(
                EpochStats(
                    epoch=epoch,
                    beta=beta,
                    loss=sums["loss"],
                    reconstruction=sums["rec"],
                    kl=sums["kl"],
                    expected_t=sums["et"],
                    val_loss=val["loss"],
                    grad_norm=float(np.mean(gnorms)),
                    grad_norm_max=float(np.max(gnorms)),
                    nan_batches=nan,
                    spike=flags[-1],
                    precision_min=val["prec"][0],
                    precision_q01=val["prec"][1],
                    precision_q50=val["prec"][2],
                    precision_q99=val["prec"][3],
                    precision_max=val["prec"][4],
                    nu_min=val["nu"][0] if val["nu"] else None,
                    nu_q01=val["nu"][1] if val["nu"] else None,
                    nu_q50=val["nu"][2] if val["nu"] else None,
                    disc_loss=dloss,
                    disc_accuracy=dacc,
                    active_units=int(val["active"]),
                    wall_s=self.clock() - e0,
                )
            )
            log.debug("epoch %d: %s", epoch, history[-1])
            if epoch >= min(self.warmup, self.t.max_epochs - 1) and math.isfinite(val["loss"]):
                if best is None or val["loss"] < best[0]:
                    best = (val["loss"], epoch, self._state(self.vae), self._dstate())
                    since_best = 0
                else:
                    since_best += 1
                    if since_best >= self.t.patience:
                        stopped_early = True
                        break
        if best is None:
            raise TrainingError("validation loss was never finite")
        self.vae.load_state_dict(best[2])
        if self.disc is not None and best[3] is not None:
            self.disc.load_state_dict(best[3])
        self.vae.eval()
        if self.disc is not None:
            self.disc.eval()
        flags = spike_flags(losses, self.t.spike_sd, start=self.warmup)
        report = TrainingReport(
            epochs=len(history),
            best_epoch=best[1],
            best_val_loss=best[0],
            nan_batches=sum(h.nan_batches for h in history),
            spikes=sum(flags),
            unresolved_spikes=unresolved(losses, flags),
            stopped_early=stopped_early,
            warm_started=self.warm,
            n_train=len(self.xt),
            n_val=len(self.xv),
            device=str(self.device),
            wall_s=self.clock() - t0,
            history=tuple(history),
        )
        return FitResult(self.vae, self.disc, report)

    @staticmethod
    def _state(module: torch.nn.Module) -> StateDict:
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    def _dstate(self) -> StateDict | None:
        return self._state(self.disc) if self.disc is not None else None

    def batches(self, n: int) -> list[torch.Tensor]:
        perm = torch.as_tensor(self.rng.permutation(n), device=self.device)
        return list(torch.split(perm, self.t.batch_size))

    def vae_epoch(self, beta: float) -> tuple[dict[str, float], list[float], int]:
        self.vae.train()
        if self.disc is not None:
            self.disc.eval()
            self.disc.requires_grad_(False)
        params = [p for p in self.vae.parameters()]
        tot = {"loss": 0.0, "rec": 0.0, "kl": 0.0, "et": 0.0}
        count, nan = 0, 0
        gnorms: list[float] = []
        for idx in self.batches(len(self.xt)):
            x, s = self.xt[idx], self.st[idx]
            if self.t.site_dropout > 0:
                drop = torch.rand(s.shape, device=self.device) < self.t.site_dropout
                s = torch.where(drop, torch.zeros_like(s), s)
            if not bool(torch.isfinite(x).all()):
                nan += 1
                continue
            terms = elbo_terms(self.vae, self.disc, x, s)
            loss = terms.loss(beta)
            if not bool(torch.isfinite(loss)):
                nan += 1
                continue
            self.opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            gn = float(torch.nn.utils.clip_grad_norm_(params, self.t.grad_clip))
            if not math.isfinite(gn):
                nan += 1
                self.opt.zero_grad(set_to_none=True)
                continue
            self.opt.step()
            gnorms.append(gn)
            b = len(idx)
            count += b
            tot["loss"] += float(loss.detach()) * b
            tot["rec"] += float(terms.reconstruction.detach().sum())
            tot["kl"] += float(terms.kl.detach().sum())
            tot["et"] += float(terms.expected_t.detach().sum())
        if self.disc is not None:
            self.disc.requires_grad_(True)
        return {k: v / max(count, 1) for k, v in tot.items()}, gnorms, nan

    def disc_epochs(self) -> tuple[float, float]:
        assert self.disc is not None
        assert self.dopt is not None
        self.vae.eval()
        finite = torch.isfinite(self.xt).all(dim=1)
        with torch.no_grad():
            q = self.vae.encode(self.xt[finite], self.st[finite])
            loc, scale = q.loc.detach(), q.scale.detach()
        self.disc.train()
        last_loss, last_acc = 0.0, 0.0
        for _ in range(self.t.discriminator_epochs_per_cycle):
            losses, accs = [], []
            for idx in self.batches(len(loc)):
                z_pos = loc[idx] + scale[idx] * torch.randn_like(loc[idx])
                z_neg = torch.randn_like(z_pos)
                loss, acc = discriminator_loss(self.disc, z_pos, z_neg)
                if not bool(torch.isfinite(loss)):
                    continue
                self.dopt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                self.dopt.step()
                losses.append(float(loss.detach()))
                accs.append(float(acc))
            if losses:
                last_loss, last_acc = float(np.mean(losses)), float(np.mean(accs))
        self.disc.eval()
        return last_loss, last_acc

    def validate(self) -> dict[str, Any]:
        self.vae.eval()
        with torch.no_grad():
            terms = elbo_terms(self.vae, self.disc, self.xv, self.sv, eps=self.val_eps)
            loss = float(terms.loss(1.0))
            q = self.vae.encode(self.xv, self.sv)
            p = self.vae.decoder.params(q.loc, self.vae.site_features(self.sv))
            prec = torch.exp(p[1]).flatten().cpu().numpy()
            nu = p[2].flatten().cpu().numpy() if len(p) == 3 else None
            active = int((q.loc.var(0) > 0.01).sum()) if len(self.xv) > 1 else 0
        return {
            "loss": loss,
            "prec": [float(prec.min()), *quantiles(prec, (0.01, 0.5, 0.99)), float(prec.max())],
            "nu": [float(nu.min()), *quantiles(nu, (0.01, 0.5))] if nu is not None else None,
            "active": active,
        }
