"""What every dashboard callback shares: when to draw, on which fixed batch, and where to write it."""

from __future__ import annotations

import dataclasses
import logging
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer

from vaelab.dashboard.budget import DashboardBudget
from vaelab.loggers.tensorboard import tensorboard_writer
from vaelab.models.output import AutoencoderOutput

log = logging.getLogger(__name__)


def logging_step(trainer: Trainer) -> int:
    """The step Lightning itself gives the metrics logged at this point (for validation at the end of an epoch,
    that of the last training batch), so images line up with the scalars in TensorBoard."""
    loop = getattr(trainer.fit_loop, "epoch_loop", None)
    return int(getattr(loop, "_batches_that_stepped", trainer.global_step))


@dataclasses.dataclass
class _Pass:
    """One pass of the fixed images through the model, kept for the other callbacks that ask for the same one."""

    module: weakref.ref
    key: tuple
    x: torch.Tensor
    y: torch.Tensor
    out: AutoencoderOutput
    rng_after: list[torch.Tensor]  # the CPU (and CUDA) generator states right after it


class DashboardCallback(Callback):
    """Draws something for a person to look at in TensorBoard after every ``every_n_epochs`` validation epochs.

    Each drawing uses the same first ``num_images`` images of ``split`` (from the DataModule's
    ``fixed_batch``) and the same random draws (a forked RNG seeded with ``seed``), so successive epochs differ only
    by what the model learnt, and training draws the same random numbers with the callback on or off.
    Subclasses implement :meth:`draw`; they read the pure model's :class:`AutoencoderOutput` (and ask the pure model
    to decode or sample), never the objective.

    The dashboard callbacks of a trainer share one pass: the first to draw after an optimizer step runs the model on
    as many fixed images as the most any of them (of the same split and seed) wants, and each takes the first
    ``num_images`` of its output, and the random state it left, so that each draws the same thing every epoch.
    """

    #: the latest pass through the model, for the next callback that wants the same one
    _shared: _Pass | None = None
    #: whether the dashboard's time budget (:class:`~vaelab.dashboard.budget.DashboardBudget`) governs this view
    budgeted: bool = True

    def __init__(self, num_images: int = 32, every_n_epochs: int = 1, split: str = "val", seed: int = 0) -> None:
        super().__init__()
        if num_images < 1 or every_n_epochs < 1:
            raise ValueError("num_images and every_n_epochs must be >= 1")
        self.num_images, self.every_n_epochs, self.split, self.seed = num_images, every_n_epochs, split, seed
        self._warned = False
        self.class_names: tuple[str, ...] | None = None  # the data's, read before each drawing
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self._budget: Any = None  # the trainer's DashboardBudget, if it has one
        self.dropped = 0  # drawings replaced by a newer one before they started

    def in_background(self, render: Callable[[], None]) -> None:
        """Run ``render`` (a matplotlib drawing, a PNG encoding, and the write to TensorBoard) in a worker thread, so
        that training goes on meanwhile; the end of training waits for every one, so none is lost.

        The queue is bounded: a drawing that has not started when the next one of the same view arrives is dropped
        for it (the newer one shows the same view, later), so a slow worker never builds a backlog that delays the
        end of a run."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=type(self).__name__)
        for future in self._pending:
            if future.cancel():  # (only one not started yet can be cancelled)
                self.dropped += 1
        # keep what is still running, and what failed: wait() must re-raise that error, not lose it
        self._pending = [f for f in self._pending
                         if not f.cancelled() and (not f.done() or f.exception() is not None)]
        budget = self._budget

        def timed() -> None:
            started = time.thread_time()
            try:
                render()
            finally:
                if budget is not None:
                    budget.add(self, time.thread_time() - started)

        self._pending.append(self._executor.submit(timed))

    def wait(self, reraise: bool = True) -> None:
        """Finish every drawing in flight, re-raising a drawing's error here rather than dropping it (or, with
        ``reraise=False``, when another error is already in hand, logging it)."""
        pending, self._pending = self._pending, []
        for future in pending:
            try:
                future.result()
            except Exception:
                if reraise:
                    raise
                log.exception("%s: a drawing failed while training stopped", type(self).__name__)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.wait()  # before Lightning finalises the loggers

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Training stopped on an error, Ctrl-C or SIGTERM: finish the drawings in flight (at most the one in progress
        and one queued behind it: the queue is bounded) before Lightning closes the loggers (it calls this hook
        first), so the run ends within two drawings' time; a drawing's own error is logged, not raised over the one
        in hand."""
        self.wait(reraise=False)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._budget = next((c for c in getattr(trainer, "callbacks", ()) if isinstance(c, DashboardBudget)), None)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        DashboardCallback._shared = None  # (its tensors)
        self.wait()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def draw(
        self, writer: Any, tag_prefix: str, step: int, module: Any, x: torch.Tensor, y: torch.Tensor,
        out: AutoencoderOutput,
    ) -> None:  # pragma: no cover - interface
        """Draw the view of ``out``, the pure model ``module``'s pass over the fixed images ``x`` (labels ``y``);
        ``module`` (:class:`~vaelab.models.autoencoder.Autoencoder`) decodes or samples where a view needs more."""
        raise NotImplementedError

    def due(self, trainer: Trainer) -> bool:
        """Whether this view is due at the end of this validation epoch: every ``every_n_epochs``-th, and the last
        (the dashboard's budget, when the trainer has one, may still hold it back: see
        :mod:`vaelab.dashboard.budget`)."""
        return _last_epoch(trainer) or (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not self.due(trainer):
            return
        budget = self._budget
        if budget is not None and not budget.allows(self, _last_epoch(trainer)):
            return
        if budget is not None:
            budget.begin(self)
        started = time.perf_counter()
        try:
            self.draw_now(trainer, pl_module)
        finally:
            if budget is not None:
                budget.add(self, time.perf_counter() - started)

    def draw_now(self, trainer: Trainer, pl_module: LightningModule, step: int | None = None) -> None:
        """Pass the fixed images through the model (in eval mode, without gradients, under the fixed seed) and
        :meth:`draw` what came out, at ``step`` (default: the step of the metrics logged now); nothing (and one
        warning) without a TensorBoard logger."""
        writer = tensorboard_writer(trainer)
        if writer is None:
            if not self._warned:
                log.warning("%s draws into TensorBoard, but the run has no TensorBoard logger: skipped",
                            type(self).__name__)
                self._warned = True
            return
        datamodule = trainer.datamodule
        self.class_names = getattr(datamodule, "class_names", None)
        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        step = logging_step(trainer) if step is None else step
        # the weights are those of this optimizer step (also at the end of training, after the last validation)
        wanted = [c.num_images for c in getattr(trainer, "callbacks", ())
                  if isinstance(c, DashboardCallback) and (c.split, c.seed) == (self.split, self.seed)]
        n = max([self.num_images, *wanted])
        key = (id(trainer), trainer.global_step, self.split, n, self.seed, str(pl_module.device))
        shared = DashboardCallback._shared
        model = getattr(pl_module, "model", pl_module)  # the pure model the Lightning module trains
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                if shared is not None and shared.key == key and shared.module() is pl_module:
                    x, y, out = shared.x, shared.y, shared.out
                    _set_rng_states(shared.rng_after, devices)
                else:
                    x, y = datamodule.fixed_batch(self.split, n)
                    if hasattr(datamodule, "class_labels"):  # factor labels (N, F): the factor plots are coloured by
                        y = datamodule.class_labels(y)
                    x, y = x.to(pl_module.device), y.to(pl_module.device)
                    torch.manual_seed(self.seed)
                    # the pure model's pass: no objective runs here (a conditional model is given the classes)
                    out = model(x, labels=y) if getattr(model, "conditional", False) else model(x)
                    out.weights = pl_module.weights() if hasattr(pl_module, "weights") else {}
                    rng_after = [torch.get_rng_state(), *(torch.cuda.get_rng_state(d) for d in devices)]
                    DashboardCallback._shared = _Pass(weakref.ref(pl_module), key, x, y, out, rng_after)
                if len(x) > self.num_images:
                    x, y, out = x[: self.num_images], y[: self.num_images], first(out, self.num_images)
                self.draw(writer, self.split, step, model, x, y, out)
        finally:
            pl_module.train(was_training)


def _last_epoch(trainer: Trainer) -> bool:
    return trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs


def _set_rng_states(states: list[torch.Tensor], devices: list[torch.device]) -> None:
    torch.set_rng_state(states[0])
    for device, state in zip(devices, states[1:], strict=True):
        torch.cuda.set_rng_state(state, device)


def classes_of(module: Any, labels: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    """The keyword a conditional model's ``decode`` takes for ``n`` codes of the class ``labels`` (one class for all,
    or one each); nothing for any other model."""
    if not getattr(module, "conditional", False):
        return {}
    labels = labels.reshape(-1)
    return {"labels": labels.expand(n) if labels.numel() == 1 else labels}


def first(out: AutoencoderOutput, n: int) -> AutoencoderOutput:
    """The output of the first ``n`` images of a pass (the batch mean ``loss`` and ``terms`` stay the whole pass's)."""
    return dataclasses.replace(
        out, x_out=out.x_out[:n], z=out.z[:n], mu=out.mu[:n], logvar=None if out.logvar is None else out.logvar[:n],
        recon=out.recon[:n], kl=out.kl[:n],
    )
