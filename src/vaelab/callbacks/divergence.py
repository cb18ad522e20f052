"""Stop a run the moment its loss stops being a number, before a NaN reaches a checkpoint, a drawing or a test.

A diverging run (too high a learning rate, a Gaussian likelihood with a tiny ``likelihood_std``) otherwise trains on
with NaN weights to the end: the dashboards crash on NaN codes, the checkpoint callback may keep NaN weights as the
"best" (Lightning scores a NaN monitor as the worst value, but still saves it while it has fewer than
``save_top_k`` checkpoints, and always saves ``last.ckpt``), and the NaN weights get tested.

:class:`DivergenceStop` checks

* every training step, the loss before its backward pass (one host-device sync a step; ``check_every_n_steps``
  trades that for a coarser report on fast GPU runs), so the weights in memory stay those of the last finite step;
* before each validation epoch, and at the end of each training epoch, that every weight is finite (a last step
  whose loss was finite can still have made them infinite);
* at the end of each validation epoch, the validation loss, before any dashboard draws and before the checkpoint
  callbacks (Lightning calls those last) save anything.

On a non-finite value it raises :class:`DivergedError`, one message naming the step, the terms that are not finite
(recon, KL, or an objective's own term) and what to try. Checkpoints already on disk are the last finite ones;
``vaelab.tasks.train`` records ``status: diverged`` and does not test.
"""

from __future__ import annotations

import math

import torch
from lightning import Callback, LightningModule, Trainer

from vaelab.errors import DivergedError

#: how often the loss is looked at on a GPU by default (a host-device sync each time)
GPU_CHECK_EVERY = 50


def advice(pl_module: LightningModule, trainer: Trainer | None) -> list[str]:
    """What to try against a divergence, with the run's own values."""
    hparams = getattr(pl_module, "hparams", {}) or {}
    tips = []
    lr = (hparams.get("optimizer") or {}).get("lr")
    if isinstance(lr, (int, float)):
        tips.append(f"a lower learning rate, e.g. model.optimizer.lr={lr / 10:g} (now {lr:g})")
    else:
        tips.append("a lower learning rate (model.optimizer.lr)")
    clip = getattr(trainer, "gradient_clip_val", None) if trainer is not None else None
    if not getattr(pl_module, "automatic_optimization", True):
        pass  # Lightning clips no gradients under manual optimisation (an objective with an adversary): no tip
    elif not clip:
        tips.append("gradient clipping, e.g. +trainer.gradient_clip_val=1.0")
    else:
        tips.append(f"stronger gradient clipping (trainer.gradient_clip_val={clip:g} now)")
    if hparams.get("likelihood") == "gaussian":
        std = hparams.get("likelihood_std")
        tips.append(f"a larger Gaussian model.likelihood_std (now {std:g}; a tiny one makes the reconstruction "
                    "error huge)" if isinstance(std, (int, float)) else "a larger Gaussian model.likelihood_std")
    return tips


def divergence_message(where: str, what: dict[str, float], pl_module: LightningModule, trainer: Trainer | None,
                       found: str = "the loss is not finite") -> str:
    """``Training diverged at <where>: <found> (recon=nan, kl=inf).``, then what was kept, then what to try."""
    detail = ", ".join(f"{name}={value}" for name, value in what.items())
    checkpoint = getattr(trainer, "checkpoint_callback", None) if trainer is not None else None
    saved = [p for p in (getattr(checkpoint, "best_model_path", ""), getattr(checkpoint, "last_model_path", "")) if p]
    kept = (f"the checkpoints saved before it are kept, with finite weights ({', '.join(dict.fromkeys(saved))})"
            if saved else "no checkpoint had been saved yet")
    lines = [
        f"Training diverged at {where}: {found}" + (f" ({detail})" if detail else "") + ".",
        f"The run was stopped there and nothing was tested; {kept}.",
        "Try " + "; or ".join(advice(pl_module, trainer)) + ".",
    ]
    return "\n".join(lines)


def _weights_finite(pl_module: LightningModule) -> bool:
    flags = [torch.isfinite(p.detach()).all() for p in pl_module.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


class DivergenceStop(Callback):
    """Raise :class:`DivergedError` as soon as the training loss, the weights or the validation loss are not finite.

    Args:
        check_every_n_steps: check the loss every this many training steps (1: every step, which names the exact
            step; a larger value saves a host-device sync on fast GPU steps and reports the steps in between, since
            a non-finite step leaves the epoch's running sums non-finite). None (default): every step on a CPU,
            where the check costs nothing, and every :data:`GPU_CHECK_EVERY` steps on a GPU, where a sync a step
            would stall its queue of kernels.
    """

    def __init__(self, check_every_n_steps: int | None = None) -> None:
        super().__init__()
        if check_every_n_steps is not None and check_every_n_steps < 1:
            raise ValueError("callbacks.divergence.check_every_n_steps must be >= 1 (or null)")
        self.requested = check_every_n_steps
        self.check_every_n_steps = check_every_n_steps or 1
        self._last_checked_step = -1
        self._flag: torch.Tensor | None = None

    # -------------------------------------------------------------- deciding, on every process alike
    @staticmethod
    def _any_rank(trainer: Trainer, bad: bool) -> bool:
        """True when any process saw a non-finite value, so every process stops at the same point."""
        if trainer.world_size > 1:
            return bool(trainer.strategy.reduce_boolean_decision(bool(bad), all=False))
        return bool(bad)

    def _running_sums(self, pl_module: LightningModule, stage: str) -> dict[str, float]:
        """The non-finite terms among the module's running sums of ``stage`` (an AutoencoderModule's
        :class:`~vaelab.training.epoch_sums.EpochSums`: the epoch so far, so a term that went non-finite at any step
        since the last check is among them)."""
        sums = getattr(pl_module, "sums", None)
        return sums.non_finite(stage) if sums is not None else {}

    def _raise(self, trainer: Trainer, pl_module: LightningModule, where: str, what: dict[str, float],
               found: str = "the loss is not finite") -> None:
        raise DivergedError(divergence_message(where, what, pl_module, trainer, found))

    # -------------------------------------------------------------- the checks
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.requested is None:
            self.check_every_n_steps = GPU_CHECK_EVERY if pl_module.device.type == "cuda" else 1
        # (after a checkpoint was restored: a resumed run must not start from a diverged run's weights)
        self._last_checked_step = trainer.global_step - 1
        self._flag = None
        if self._any_rank(trainer, not _weights_finite(pl_module)):
            raise DivergedError(
                f"The weights to train on are not finite (NaN or inf) at step {trainer.global_step}: the checkpoint "
                "they come from was saved after its run diverged. Resume from an earlier checkpoint of that run "
                "(checkpoints/epoch_….ckpt), or start afresh."
            )

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        step = trainer.global_step
        if self.check_every_n_steps == 1:
            # (a scalar loss: one read of its value, instead of isfinite, all and then a read)
            bad = not math.isfinite(loss.item()) if loss.numel() == 1 else not bool(torch.isfinite(loss).all())
        else:  # accumulate on the device, look every n steps
            finite = torch.isfinite(loss.detach()).all()
            self._flag = ~finite if self._flag is None else self._flag | ~finite
            if (step + 1) % self.check_every_n_steps:
                return
            bad, self._flag = bool(self._flag), None
        if self._any_rank(trainer, bad):
            first = self._last_checked_step + 1
            where = f"step {step}" if first >= step else f"a step between {first} and {step}"
            self._raise(trainer, pl_module, f"{where} (epoch {trainer.current_epoch})",
                        self._running_sums(pl_module, "train") or {"loss": float(loss.detach().float().sum())})
        self._last_checked_step = step

    def _check_flag(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The steps not looked at yet (``check_every_n_steps`` > 1), before anything is saved or drawn."""
        if self._flag is None:
            return
        bad, self._flag = bool(self._flag), None
        if self._any_rank(trainer, bad):
            first, step = self._last_checked_step + 1, trainer.global_step - 1
            self._raise(trainer, pl_module, f"a step between {first} and {step} (epoch {trainer.current_epoch})",
                        self._running_sums(pl_module, "train"))

    def _check_weights(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check_flag(trainer, pl_module)
        if self._any_rank(trainer, not _weights_finite(pl_module)):
            self._raise(trainer, pl_module, f"step {trainer.global_step} (epoch {trainer.current_epoch})", {},
                        found="the model's weights are not finite (the last step's update made them NaN or inf)")

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check_weights(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # (called before the module logs its epoch means, and before the dashboards when this callback comes first)
        if trainer.sanity_checking:
            return
        what = self._running_sums(pl_module, "val")
        if self._any_rank(trainer, bool(what)):
            self._raise(trainer, pl_module, f"validation after step {trainer.global_step} "
                        f"(epoch {trainer.current_epoch})", what, found="the validation loss is not finite")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # (before the checkpoint callbacks, which Lightning calls last: this saves when there is no validation)
        self._check_weights(trainer, pl_module)
