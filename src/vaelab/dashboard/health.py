"""Whether a VAE's code carries anything: posterior collapse, loud in the log and on the dashboard.

A VAE whose KL term wins (a β-VAE with a large β on small images, for one) learns q(z | x) = p(z) for every x: its
decoder ignores z and draws the same grey average for every input. :func:`code_health` measures that on the fixed
validation images; :class:`CollapseAlarm` warns in the log and writes a Text card; the KL and latent-space figures
and the reconstruction grid put it in their titles.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from lightning import LightningModule, Trainer

from vaelab.dashboard.base import DashboardCallback
from vaelab.metrics.active_units import ACTIVE_UNIT_THRESHOLD
from vaelab.models.distributions import kl_per_dimension
from vaelab.models.output import AutoencoderOutput

log = logging.getLogger(__name__)

#: Below this mean KL per image (nats) the code tells the decoder almost nothing about the image, whatever the
#: active-unit count says (a unit whose mean moves a little but whose variance stays near the prior's carries ~0).
KL_COLLAPSE_THRESHOLD = 0.1


@dataclass(frozen=True)
class CodeHealth:
    """What a VAE's posterior carries over a set of images."""

    kl_per_dim: np.ndarray  # mean KL(q(z_u | x) ‖ p(z_u)) over the images, nats, per dimension
    mu_var: np.ndarray  # Cov_x(E_q[z_u]) per dimension (Burda et al. 2016's activity)
    n_images: int
    beta: float | None = None  # the KL weight the loss used, when it has one
    kl_threshold: float = KL_COLLAPSE_THRESHOLD

    @property
    def active(self) -> np.ndarray:
        return self.mu_var > ACTIVE_UNIT_THRESHOLD

    @property
    def n_active(self) -> int:
        return int(self.active.sum())

    @property
    def kl_total(self) -> float:
        return float(self.kl_per_dim.sum())

    @property
    def collapsed(self) -> bool:
        """No active unit, or less than ``kl_threshold`` nats of KL per image."""
        return self.n_active == 0 or self.kl_total < self.kl_threshold

    def summary(self) -> str:
        """``3 of 16 units active, KL 0.0117 nats/image``."""
        return f"{self.n_active} of {len(self.kl_per_dim)} units active, KL {self.kl_total:.3g} nats/image"

    def headline(self) -> str:
        """A figure title's worth: ``COLLAPSED: 0/16 active, KL 0.012 nats``."""
        return f"COLLAPSED: {self.n_active}/{len(self.kl_per_dim)} active, KL {self.kl_total:.2g} nats"

    def advice(self) -> str:
        beta = f" (β = {self.beta:g})" if self.beta else ""
        return (f"try a smaller model.beta{beta} (on the default 8×8 digits β ≥ 3 collapses, β = 2 keeps under "
                "1 nat), capacity control (model/objective=capacity, which steers the KL to a target instead of "
                "to 0) or, if it collapses early in training, a KL warm-up (model/beta_schedule=linear)")

    def details(self) -> str:
        """What is wrong, what it looks like and what to try."""
        return (f"{self.summary()} on {self.n_images} validation images (collapsed below {self.kl_threshold:g} nats "
                f"or with no unit whose Cov_x(μ) > {ACTIVE_UNIT_THRESHOLD:g}). The decoder ignores z, so "
                f"reconstructions and samples are one grey average; {self.advice()}.")

    def message(self) -> str:
        """The warning for the log."""
        return f"posterior collapse: {self.details()}"


def code_health(out: AutoencoderOutput, kl_threshold: float = KL_COLLAPSE_THRESHOLD) -> CodeHealth | None:
    """The :class:`CodeHealth` of a VAE's pass over some images; None for a deterministic autoencoder (no prior)."""
    if out.logvar is None:
        return None
    mu = out.mu.detach().double()
    kl = kl_per_dimension(mu, out.logvar.detach().double()).mean(0)
    var = mu.var(0, unbiased=False) if len(mu) > 1 else torch.zeros_like(kl)
    beta = out.weights.get("beta")
    return CodeHealth(kl.cpu().numpy(), var.cpu().numpy(), len(mu), None if beta is None else float(beta),
                      kl_threshold)


class CollapseAlarm(DashboardCallback):
    """``<split>/collapse`` (Text): a VAE's code collapsed to the prior on the fixed images, said in the log and as a
    Text card. It speaks once the code has been collapsed at ``patience`` validation epochs in a row (an untrained
    VAE's KL is small too) or at the last epoch: a warning in the log (once per collapse) and a Text card at every
    such epoch; a log line and a card when the code recovers; and at the end of training, a warning if it ended
    collapsed. Nothing for a healthy model or an AE."""

    #: (it must look at every validation epoch to count a collapse's streak; its card is a line of text)
    budgeted = False

    def __init__(self, num_images: int = 1000, kl_threshold: float = KL_COLLAPSE_THRESHOLD, patience: int = 2,
                 **kwargs: Any) -> None:
        if patience < 1:
            raise ValueError("patience must be >= 1")
        super().__init__(num_images=num_images, **kwargs)
        self.kl_threshold, self.patience = kl_threshold, patience
        self.last: CodeHealth | None = None
        self.streak = 0  # validation epochs in a row with the code collapsed
        self._told = False  # the warning of this collapse went to the log
        self._last_epoch = False

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._last_epoch = trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs
        super().on_validation_epoch_end(trainer, pl_module)

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        health = code_health(out, self.kl_threshold)
        if health is None:
            return
        self.last = health
        tag = f"{tag_prefix}/collapse"
        if health.collapsed:
            self.streak += 1
            if self.streak < self.patience and not self._last_epoch:
                return
            if not self._told:
                log.warning("step %d: %s", step, health.message())
                self._told = True
            text = f"**Posterior collapse** at step {step}: {health.details()}"
            self.in_background(lambda: writer.add_text(tag, text, step))
        else:
            self.streak = 0
            if self._told:
                log.info("step %d: the code recovered from its collapse: %s", step, health.summary())
                self._told = False
                text = f"Recovered from the collapse at step {step}: {health.summary()}."
                self.in_background(lambda: writer.add_text(tag, text, step))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.last is not None and self.last.collapsed and trainer.is_global_zero:
            log.warning("training ended with the posterior collapsed: %s", self.last.message())
        super().on_train_end(trainer, pl_module)
