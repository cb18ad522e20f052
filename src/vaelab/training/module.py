"""The Lightning module: trains a pure model (:class:`~vaelab.models.autoencoder.Autoencoder`) on an objective.

It holds what training needs and the model does not: the objective (:mod:`vaelab.models.objectives`, chosen by
``model/objective``) and its β schedule, the exact epoch means of every term, the posterior means' statistics for
active units, the optimiser and scheduler, and the checkpoint hooks. One ``model_step`` serves train, val and test.

Training in stages (:mod:`vaelab.training.stages`): ``init_from`` starts from the pure model's weights in another
run's checkpoint, and ``trainable`` trains only the named parts of the pure model (e.g. ``[code.prior]``): the other
parameters are frozen and left out of the optimiser, and their modules stay in eval mode, so nothing they do in
training mode (a VQ codebook's updates) changes them. VQ-VAE's second stage is both: ``model=vqvae_prior
model.init_from=<stage-1 checkpoint>`` trains a PixelCNN prior on the frozen first stage's codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from hydra.utils import instantiate
from lightning import Callback, LightningModule
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from vaelab.data.loaders import shard_size
from vaelab.errors import ConfigError
from vaelab.metrics.active_units import ActiveUnits
from vaelab.models.autoencoder import Autoencoder, plain
from vaelab.models.legacy import code_of_objective, upgrade_checkpoint
from vaelab.models.objectives.base import DataFacts
from vaelab.models.output import AutoencoderOutput
from vaelab.models.schedules import outlasting_message
from vaelab.training.epoch_sums import EpochSums
from vaelab.training.stages import check_parts, freeze_all_but, load_initial_weights

DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
DEFAULT_SCHEDULE = {"_target_": "vaelab.models.schedules.ConstantBeta"}
DEFAULT_OBJECTIVE = {"_target_": "vaelab.models.objectives.Elbo"}
#: the epoch sums every objective logs, before its own terms
BASE_TERMS = ("loss", "recon", "kl")


#: the hooks Lightning calls on every callback at every batch (training's also around backward and the optimiser)
PER_BATCH_HOOKS = (
    "on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
    "on_before_optimizer_step", "on_before_zero_grad", "on_validation_batch_start", "on_validation_batch_end",
    "on_test_batch_start", "on_test_batch_end", "on_predict_batch_start", "on_predict_batch_end",
)


def skip_no_op_batch_hooks(callbacks: Sequence[Callback]) -> None:
    """Switch off the per-batch hooks a callback leaves as :class:`~lightning.Callback`'s no-op.

    Lightning calls every per-batch hook of every callback, each call inside a profiler context named after the
    callback's ``state_key``: six such hooks a training step for each callback, most of which act once an epoch
    (docs/performance.md has what that costs a step). Lightning skips a hook whose attribute is not
    callable (``lightning.pytorch.trainer.call._call_callback_hooks``), so an instance attribute of None in place
    of the inherited no-op removes the call and changes nothing else. Hooks a callback (or a base such as
    ``ModelCheckpoint``) overrides, or sets on the instance, are kept."""
    for callback in callbacks:
        for name in PER_BATCH_HOOKS:
            if name not in vars(callback) and getattr(type(callback), name, None) is getattr(Callback, name):
                setattr(callback, name, None)


def data_facts(datamodule: Any, world_size: int = 1) -> DataFacts:
    """What a set-up DataModule of vaelab's says for an objective (:class:`DataFacts`), for ``world_size``
    processes (training shards padded to one size, val/test shards not: as :mod:`vaelab.data.loaders` deals them);
    only the training set's size of another DataModule."""
    splits = getattr(datamodule, "splits", None)
    if not splits or not hasattr(datamodule, "eval_batch_size"):
        return DataFacts(num_train_images=getattr(datamodule, "num_train_images", None))
    shards = {split: tuple(shard_size(len(splits[split][0]), rank, world_size, pad=split == "train")
                           for rank in range(world_size)) for split in ("train", "val", "test") if split in splits}
    batch_sizes = {"train": int(datamodule.batch_size), "val": int(datamodule.eval_batch_size),
                   "test": int(datamodule.eval_batch_size)}
    return DataFacts(len(splits["train"][0]) if "train" in splits else None, batch_sizes, shards)


class AutoencoderModule(LightningModule):
    """An autoencoder trained with the objective of its configuration.

    Args:
        image_shape: (channels, height, width) of the data, filled in from the DataModule.
        latent_dim, code, net, likelihood, likelihood_std, corruption, compile, channels_last, prior, num_classes: the
            pure model's
            (:class:`~vaelab.models.autoencoder.Autoencoder`); ``code`` defaults to the one ``objective`` implies
            (a point for the autoencoder's ``Reconstruction``, else a Gaussian posterior).
        objective: a ``_target_`` config of an objective from :mod:`vaelab.models.objectives` (default: the ELBO);
            it receives the β schedule.
        beta: the target weight of the schedule (1 for the VAE, e.g. 4 for a β-VAE; γ for capacity control; the
            weight of the total correlation for β-TC-VAE).
        beta_schedule: a ``_target_`` config of a schedule from :mod:`vaelab.models.schedules`; it receives ``beta``.
        optimizer: a ``_partial_`` optimizer config; the module passes the model's parameters.
        scheduler: an optional ``_partial_`` LR scheduler config; the module passes the optimizer.
        monitor, monitor_mode: the metric that is comparable across epochs whatever β does (``val/elbo``, max, for a
            VAE; ``val/loss``, min, for an AE): checkpointing, plateau schedulers and sweeps watch it.
        init_from: a checkpoint file whose pure-model weights the model starts from (every weight must fit, except
            those of the ``trainable`` parts, which the checkpoint need not have).
        trainable: the parts of the pure model to train (names of its submodules, e.g. ``[code.prior]``); None
            trains all of it.
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
        code: Mapping[str, Any] | None = None,
        corruption: Mapping[str, Any] | None = None,
        init_from: str | None = None,
        trainable: Sequence[str] | None = None,
        prior: Mapping[str, Any] | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        image_shape = [int(s) for s in plain(image_shape)]
        objective = plain(objective) or dict(DEFAULT_OBJECTIVE)
        beta_schedule = plain(beta_schedule) or dict(DEFAULT_SCHEDULE)
        code = plain(code) or code_of_objective(objective)
        net, corruption, prior = plain(net), plain(corruption), plain(prior)
        optimizer = plain(optimizer) or dict(DEFAULT_OPTIMIZER)
        scheduler = plain(scheduler)
        trainable = plain(trainable)
        # Everything above is primitives now, so the checkpoint alone rebuilds the model (eval.py relies on it).
        self.save_hyperparameters(logger=False)

        self.model = Autoencoder(image_shape, latent_dim, code=code, net=net, likelihood=likelihood,
                                 likelihood_std=likelihood_std, corruption=corruption,
                                 channels_last=channels_last, compile=compile, prior=prior,
                                 num_classes=num_classes)
        self._frozen = self._train_in_stages(init_from, trainable)
        schedule = instantiate(beta_schedule, beta=float(beta))
        # (a partial, so the schedule object is handed over as it is, not turned into a config by Hydra)
        self.objective = instantiate(objective, _partial_=True)(schedule=schedule)
        if self.objective.needs_posterior and not self.model.variational:
            raise ValueError(f"the objective {type(self.objective).__name__} needs a Gaussian posterior q(z|x), but "
                             f"model.code is a {type(self.model.code).__name__}: use model.code=gaussian")
        #: the posterior means' statistics for the active units of val and test (a Gaussian code's only)
        self.code_stats = nn.ModuleDict(
            {stage: ActiveUnits(self.model.latent_dim) for stage in ("val", "test")} if self.model.variational else {}
        )
        self.sums = EpochSums(BASE_TERMS + self.objective.term_names)
        # An objective with an adversary (FactorVAE's discriminator) needs two optimiser steps a batch: manual
        # optimisation (adversarial_step). Every other objective keeps Lightning's automatic loop.
        self.automatic_optimization = not self.objective.has_adversary
        self._checkpoint_step: int | None = None  # the step of weights loaded for testing (see schedule_step)

    # ------------------------------------------------------------------ training in stages
    def _train_in_stages(self, init_from: str | None, trainable: Sequence[str] | None) -> list[nn.Module]:
        """Freeze all but the ``trainable`` parts and load the ``init_from`` weights; the modules kept in eval mode."""
        parts = check_parts(self.model, trainable) if trainable else ()
        frozen = freeze_all_but(self.model, parts) if parts else []
        if init_from:
            load_initial_weights(self.model, init_from, parts, self.hparams)
        for module in frozen:
            module.training = False
        if parts:
            trained = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
            total = sum(p.numel() for p in self.model.parameters())
            rank_zero_info(f"model.trainable = {list(parts)}: {trained:,} of {total:,} parameters train; the rest "
                           "are frozen and kept in eval mode (Lightning's warning of modules in eval mode at the "
                           "start of training is expected)")
        return frozen

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets this plain string before and after every hook call, dozens of times a step; nn.Module's
        # __setattr__ looks for parameters, buffers and submodules of the name first, which a string never is.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def train(self, mode: bool = True) -> AutoencoderModule:
        """Lightning's switch between training and eval mode, the frozen parts kept in eval mode."""
        super().train(mode)
        for module in getattr(self, "_frozen", ()):
            module.training = False
        return self

    def schedule_step(self) -> int:
        """The step the β schedule is read at: the trainer's, or, when testing (or validating) weights loaded from a
        checkpoint, such as the best one after fitting, the step those weights were saved at, so ``test/beta`` and
        ``test/loss`` are theirs."""
        if self._trainer is None:
            return 0
        if self._checkpoint_step is not None and self.trainer.state.fn != TrainerFn.FITTING:
            return self._checkpoint_step
        return self.global_step

    def weights(self) -> dict[str, float]:
        """The objective's settings at the current step (β, a capacity C, …): what the loss weights now."""
        return self.objective.weights(self.schedule_step())

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        """The pure model's pass (no objective): what inference and the dashboards use."""
        return self.model(x)

    # ------------------------------------------------------------------ Lightning steps
    def model_step(self, batch: Any, stage: str) -> AutoencoderOutput:
        """The one step shared by train, val and test: the model's pass, the objective's loss, the running sums."""
        x = batch[0]
        out = self.model(x, labels=self.class_labels(batch)) if self.model.conditional else self.model(x)
        step = self.schedule_step()
        value = self.objective(self.model, x, out, step)
        out.loss, out.terms, out.weights = value.loss, value.terms, self.objective.weights(step)
        out.adversary_loss = value.adversary_loss
        self.sums.add(stage, out, x.shape[0])
        if stage in self.code_stats:
            self.code_stats[stage].update(out.mu)
        return out

    def class_labels(self, batch: Any) -> torch.Tensor:
        """The class of each image of ``batch`` that a conditional model is given: the batch's labels, or for factor
        labels ``(B, F)`` the data's class factor (:meth:`~vaelab.data.base.ImageDataModule.class_labels`)."""
        labels = batch[1]
        if labels.ndim > 1:
            labels = self.trainer.datamodule.class_labels(labels)
        return labels

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if not self.automatic_optimization:
            return self.adversarial_step(batch)
        return self.model_step(batch, "train").loss

    def adversarial_step(self, batch: Any) -> torch.Tensor:
        """One training batch of an objective with an adversary, optimised manually: the model's optimiser steps on
        the objective's loss, then the adversary's on the adversary's loss (computed on detached codes, so it reaches
        the adversary's weights only). The adversary's gradients from the first backward pass are zeroed before its
        own. ``manual_backward`` runs the ``on_before_backward`` hooks (the divergence check) for both losses.

        Only the model's step counts as an optimisation step (``global_step``, which the β schedule, ``max_steps``
        and the logs read, is the number of batches as for every other objective): the adversary's optimiser is
        stepped through the strategy, as Lightning steps any optimiser, but not through its step counter."""
        optimizer, adversary = self.optimizers()
        out = self.model_step(batch, "train")
        optimizer.zero_grad()
        self.manual_backward(out.loss)
        optimizer.step()
        adversary.zero_grad()
        self.manual_backward(out.adversary_loss)
        self.trainer.strategy.optimizer_step(adversary.optimizer, closure=lambda: None)
        return out.loss.detach()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.model_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.model_step(batch, "test")

    def _log_epoch(self, stage: str) -> None:
        # Every rank takes part in the reduction, also one that saw no batch (an uneven val/test shard).
        count, means = self.sums.reduce(stage, self.trainer.strategy, self.device)
        active = None
        if stage in self.code_stats:  # (a synchronising compute: every rank calls it)
            active = int(self.code_stats[stage].compute()) if count > 0 else None
            self.code_stats[stage].reset()
        if count == 0:
            return
        metrics = {"loss": means["loss"], "recon": means["recon"]}
        if self.model.code.has_kl:
            metrics.update(kl=means["kl"], elbo=-(means["recon"] + means["kl"]))
        metrics.update(self.objective.weights(self.schedule_step()))
        metrics.update({name: means[name] for name in self.objective.term_names})
        if active is not None:
            metrics["active_units"] = active
        # The sums are already reduced over processes, so every rank logs the same exact means; sync_dist only
        # tells Lightning so (an all-reduce of equal values, once per epoch).
        self.log_dict({f"{stage}/{k}": float(v) for k, v in metrics.items()}, sync_dist=True)

    def _start_epoch(self, stage: str) -> None:
        self.sums.reset(stage)
        if stage in self.code_stats:
            self.code_stats[stage].reset()

    def on_train_epoch_start(self) -> None:
        self._start_epoch("train")

    def on_validation_epoch_start(self) -> None:
        self._start_epoch("val")

    def on_test_epoch_start(self) -> None:
        self._start_epoch("test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")
        if not self.automatic_optimization:
            self.step_scheduler()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    # ------------------------------------------------------------------ checkpoints and fitting
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        upgrade_checkpoint(checkpoint)  # (Lightning loads the state_dict after this hook)
        self._checkpoint_step = checkpoint.get("global_step")

    def teardown(self, stage: str) -> None:
        if stage == "fit":  # the weights are now the fit's own; after a test they stay the loaded checkpoint's
            self._checkpoint_step = None

    def setup(self, stage: str) -> None:
        """Hand the objective what it needs to know of the data (β-TC-VAE: the training set's size; FactorVAE: its
        batches), from the DataModule Lightning has just set up; leave out the callbacks' no-op per-batch hooks."""
        skip_no_op_batch_hooks(self.trainer.callbacks)  # (the callbacks' own setup has run: their list is final)
        if stage == "fit":
            datamodule = getattr(self.trainer, "datamodule", None)
            self.objective.bind(data_facts(datamodule, self.trainer.world_size))

    def on_fit_start(self) -> None:
        if self.hparams.channels_last:
            self.to(memory_format=torch.channels_last)
        # (counting the steps loads the train data; a fast_dev_run is not meant to train the schedule through)
        timed = [s for s in self.objective.schedules() if s.length is not None]
        if timed and not self.trainer.fast_dev_run:
            for schedule in timed:
                message = outlasting_message(schedule, self.trainer.estimated_stepping_batches)
                if message:
                    rank_zero_warn(message)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.parameters() if p.requires_grad]  # (not the frozen parts')
        optimizer = instantiate(self.hparams.optimizer)(params=params)
        if not self.automatic_optimization:  # the model's optimiser and scheduler, then the adversary's optimiser
            scheduler = instantiate(self.hparams.scheduler)(optimizer=optimizer) if self.hparams.scheduler else None
            first = {"optimizer": optimizer}
            if scheduler is not None:  # (stepped by step_scheduler; the interval tells a LearningRateMonitor)
                first["lr_scheduler"] = {"scheduler": scheduler, "interval": "epoch"}
            return first, {"optimizer": self.objective.adversary_optimizer()}
        if not self.hparams.scheduler:
            return optimizer
        scheduler = instantiate(self.hparams.scheduler)(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams.monitor, "interval": "epoch"},
        }

    def step_scheduler(self) -> None:
        """Manual optimisation: step the model's LR scheduler once an epoch, where Lightning's automatic loop would
        (after the epoch's validation); a ``ReduceLROnPlateau`` watches ``model.monitor``. As in the automatic loop, a
        fit resumed from a checkpoint saved at the end of an epoch does not step it again for that epoch, and a
        training epoch cut short (``max_steps``) does not step it."""
        scheduler = self.lr_schedulers()
        loop = self.trainer.fit_loop.epoch_loop
        finished = (loop.batch_progress.current.ready == self.trainer.num_training_batches
                    or loop.batch_progress.is_last_batch)
        if scheduler is None or self.trainer.fit_loop.restarting or not finished:
            return
        if isinstance(scheduler, ReduceLROnPlateau):
            monitor = self.hparams.monitor
            value = self.trainer.callback_metrics.get(monitor)
            if value is None:
                raise ConfigError(
                    f"model.scheduler is a ReduceLROnPlateau on model.monitor={monitor}, which has not been logged "
                    f"(logged: {', '.join(sorted(self.trainer.callback_metrics)) or 'nothing'}): set model.monitor to "
                    "a logged metric, or validate"
                )
            scheduler.step(value)
        else:
            scheduler.step()
