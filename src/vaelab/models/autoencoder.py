"""One LightningModule for every autoencoder: the encoder/decoder pass here, the loss in an objective.

The module encodes, draws z (for a Gaussian q(z|x)), decodes and computes the per-image reconstruction error and
closed-form KL; the objective (:mod:`vaelab.models.objectives`, chosen by ``model/objective``) turns that pass into
the loss: the AE's reconstruction error, the (β-)VAE's ELBO, capacity control, β-TC-VAE, IWAE.

All terms are summed over pixels and latent dimensions and averaged over the batch (nats per image).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from hydra.utils import instantiate
from lightning import LightningModule
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from vaelab import rules
from vaelab.metrics.active_units import ActiveUnits
from vaelab.models.distributions import kl_to_standard_normal, reparameterize
from vaelab.models.likelihoods import make_likelihood
from vaelab.models.output import AutoencoderOutput
from vaelab.models.schedules import outlasting_message

DEFAULT_NET = {
    "encoder": {"_target_": "vaelab.models.nets.MLPEncoder", "hidden_dims": [400]},
    "decoder": {"_target_": "vaelab.models.nets.MLPDecoder", "hidden_dims": [400]},
}
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
DEFAULT_SCHEDULE = {"_target_": "vaelab.models.schedules.ConstantBeta"}
DEFAULT_OBJECTIVE = {"_target_": "vaelab.models.objectives.Elbo"}
#: the epoch sums every objective logs, before its own terms
BASE_TERMS = ("loss", "recon", "kl")


def _plain(cfg: Any) -> Any:
    """Hydra configs become plain containers, so the checkpoint holds only primitives."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


class AutoencoderModule(LightningModule):
    """An autoencoder trained with the objective of its configuration.

    Args:
        image_shape: (channels, height, width) of the data, filled in from the DataModule.
        latent_dim: size of the code z.
        objective: a ``_target_`` config of an objective from :mod:`vaelab.models.objectives` (default: the ELBO);
            it receives the β schedule. Whether the encoder is Gaussian (a VAE) or a point (an AE) is the
            objective's ``variational``.
        beta: the target weight of the schedule (1 for the VAE, e.g. 4 for a β-VAE; γ for capacity control; the
            weight of the total correlation for β-TC-VAE).
        beta_schedule: a ``_target_`` config of a schedule from :mod:`vaelab.models.schedules`; it receives ``beta``.
        likelihood: ``bernoulli`` (decoder outputs logits) or ``gaussian`` (decoder outputs means).
        likelihood_std: the fixed standard deviation of the Gaussian likelihood.
        net: ``{"encoder": <_target_ config>, "decoder": <_target_ config>}``; the model passes the shapes.
        optimizer: a ``_partial_`` optimizer config; the model passes its parameters.
        scheduler: an optional ``_partial_`` LR scheduler config; the model passes the optimizer.
        monitor, monitor_mode: the metric that is comparable across epochs whatever β does (``val/elbo``, max, for a
            VAE; ``val/loss``, min, for an AE): checkpointing, plateau schedulers and sweeps watch it.
        compile: compile the encoder and decoder with ``torch.compile``.
        channels_last: keep conv activations in channels-last memory format.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        latent_dim: int = 16,
        objective: Mapping[str, Any] | None = None,
        beta: float = 1.0,
        beta_schedule: Mapping[str, Any] | None = None,
        likelihood: str = "bernoulli",
        likelihood_std: float = 0.1,
        net: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        monitor: str = "val/elbo",
        monitor_mode: str = "max",
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        image_shape = [int(s) for s in _plain(image_shape)]
        objective = _plain(objective) or dict(DEFAULT_OBJECTIVE)
        beta_schedule = _plain(beta_schedule) or dict(DEFAULT_SCHEDULE)
        net = _plain(net) or DEFAULT_NET
        optimizer = _plain(optimizer) or dict(DEFAULT_OPTIMIZER)
        scheduler = _plain(scheduler)
        rules.check("model.latent_dim", latent_dim)
        rules.check("model.beta", beta)
        rules.check("model.likelihood", likelihood)
        # Everything above is primitives now, so the checkpoint alone rebuilds the model (eval.py relies on it).
        self.save_hyperparameters(logger=False)

        self.image_shape = tuple(image_shape)
        self.latent_dim = int(latent_dim)
        self.likelihood = make_likelihood(likelihood, likelihood_std)
        schedule = instantiate(beta_schedule, beta=float(beta))
        # (a partial, so the schedule object is handed over as it is, not turned into a config by Hydra)
        self.objective = instantiate(objective, _partial_=True)(schedule=schedule)
        self.variational = bool(self.objective.variational)
        #: the posterior means' statistics for the active units of val and test (a VAE's only)
        self.code_stats = nn.ModuleDict(
            {stage: ActiveUnits(self.latent_dim) for stage in ("val", "test")} if self.variational else {}
        )
        n_out = 2 * self.latent_dim if self.variational else self.latent_dim
        self.encoder = instantiate(net["encoder"], image_shape=image_shape, out_features=n_out)
        self.decoder = instantiate(net["decoder"], image_shape=image_shape, latent_dim=self.latent_dim)
        if compile:  # nn.Module.compile keeps the state_dict keys, pickles and deep-copies
            self.encoder.compile()
            self.decoder.compile()
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._checkpoint_step: int | None = None  # the step of weights loaded for testing (see schedule_step)

    # ------------------------------------------------------------------ the model
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """μ and log σ² of q(z | x) for a VAE; the code and None for an AE."""
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.encoder(x)
        if not self.variational:
            return h, None
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Raw decoder output (logits for Bernoulli); ``likelihood.mean`` turns it into an image."""
        return self.decoder(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images decoded from z ~ N(0, I) (the prior of the VAE)."""
        z = torch.randn(n, self.latent_dim, generator=generator, device="cpu").to(self.device)
        return self.likelihood.mean(self.decode(z))

    def schedule_step(self) -> int:
        """The step the β schedule is read at: the trainer's, or, when testing (or validating) weights loaded from a
        checkpoint, such as the best one after fitting, the step those weights were saved at, so ``test/beta`` and
        ``test/loss`` are theirs."""
        if self._trainer is None:
            return 0
        if self._checkpoint_step is not None and self.trainer.state.fn != TrainerFn.FITTING:
            return self._checkpoint_step
        return self.global_step

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        """The pass (encode, draw z, decode, reconstruction error and KL per image), then the objective's loss."""
        mu, logvar = self.encode(x)
        z = mu if logvar is None else reparameterize(mu, logvar)
        x_out = self.decode(z)
        recon = self.likelihood.nll(x_out, x)
        kl = recon.new_zeros(recon.shape) if logvar is None else kl_to_standard_normal(mu, logvar)
        out = AutoencoderOutput(x_out=x_out, z=z, mu=mu, logvar=logvar, recon=recon, kl=kl,
                                likelihood=self.likelihood)
        step = self.schedule_step()
        value = self.objective(self, x, out, step)
        out.loss, out.terms, out.weights = value.loss, value.terms, self.objective.weights(step)
        return out

    # ------------------------------------------------------------------ Lightning steps
    def model_step(self, batch: Any, stage: str) -> AutoencoderOutput:
        """The one step shared by train, val and test: forward pass and running sums of the terms."""
        x = batch[0]
        out = self(x)
        self._accumulate(stage, out, x.shape[0])
        return out

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.model_step(batch, "train").loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.model_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.model_step(batch, "test")

    def _accumulate(self, stage: str, out: AutoencoderOutput, n: int) -> None:
        # One fused add per step instead of a self.log call per metric: logging every step costs more than an
        # MLP step on a CPU. The sums give exact per-image means at epoch end, whatever the last batch's size.
        terms = [out.loss.detach() * n, out.recon.detach().sum(), out.kl.detach().sum()]
        terms += [out.terms[name].detach() * n for name in self.objective.term_names]
        stats = torch.stack(terms).double()
        if stage in self._sums:
            self._sums[stage] += stats
        else:
            self._sums[stage] = stats
        self._counts[stage] = self._counts.get(stage, 0) + n
        if stage in self.code_stats:
            self.code_stats[stage].update(out.mu)

    def _log_epoch(self, stage: str) -> None:
        # Every rank takes part in the reduction, also one that saw no batch (an uneven val/test shard).
        names = BASE_TERMS + self.objective.term_names
        sums = self._sums.pop(stage, None)
        if sums is None:
            sums = torch.zeros(len(names), dtype=torch.float64, device=self.device)
        count = torch.tensor([float(self._counts.pop(stage, 0))], dtype=torch.float64, device=sums.device)
        sums = self.trainer.strategy.reduce(torch.cat([count, sums]), reduce_op="sum")
        count, sums = sums[0], sums[1:]
        active = None
        if stage in self.code_stats:  # (a synchronising compute: every rank calls it)
            active = int(self.code_stats[stage].compute()) if count > 0 else None
            self.code_stats[stage].reset()
        if count == 0:
            return
        means = dict(zip(names, (sums / count).tolist(), strict=True))
        metrics = {"loss": means["loss"], "recon": means["recon"]}
        if self.variational:
            metrics.update(kl=means["kl"], elbo=-(means["recon"] + means["kl"]))
            metrics.update(self.objective.weights(self.schedule_step()))
            metrics.update({name: means[name] for name in self.objective.term_names})
            if active is not None:
                metrics["active_units"] = active
        # The sums are already reduced over processes, so every rank logs the same exact means; sync_dist only
        # tells Lightning so (an all-reduce of equal values, once per epoch).
        self.log_dict({f"{stage}/{k}": float(v) for k, v in metrics.items()}, sync_dist=True)

    def on_train_epoch_start(self) -> None:
        self._sums.pop("train", None)
        self._counts.pop("train", None)

    def on_validation_epoch_start(self) -> None:
        self._sums.pop("val", None)
        self._counts.pop("val", None)
        if "val" in self.code_stats:
            self.code_stats["val"].reset()

    def on_test_epoch_start(self) -> None:
        self._sums.pop("test", None)
        self._counts.pop("test", None)
        if "test" in self.code_stats:
            self.code_stats["test"].reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the DataModule's config beside the model's, so ``eval.py`` needs nothing but the checkpoint."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "hparams"):
            cls = type(datamodule)
            config = {k: str(v) if isinstance(v, os.PathLike) else v for k, v in datamodule.hparams.items()}
            checkpoint["vaelab_data"] = {"_target_": f"{cls.__module__}.{cls.__qualname__}", **config}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._checkpoint_step = checkpoint.get("global_step")

    def teardown(self, stage: str) -> None:
        if stage == "fit":  # the weights are now the fit's own; after a test they stay the loaded checkpoint's
            self._checkpoint_step = None

    def on_fit_start(self) -> None:
        if self.hparams.channels_last:
            self.to(memory_format=torch.channels_last)
        self.objective.bind(self.trainer)
        # (counting the steps loads the train data; a fast_dev_run is not meant to train the schedule through)
        timed = [s for s in self.objective.schedules() if s.length is not None]
        if timed and not self.trainer.fast_dev_run:
            for schedule in timed:
                message = outlasting_message(schedule, self.trainer.estimated_stepping_batches)
                if message:
                    rank_zero_warn(message)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        optimizer = instantiate(self.hparams.optimizer)(params=self.parameters())
        if not self.hparams.scheduler:
            return optimizer
        scheduler = instantiate(self.hparams.scheduler)(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams.monitor, "interval": "epoch"},
        }
