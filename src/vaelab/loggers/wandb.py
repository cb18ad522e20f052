"""Weights & Biases as vaelab writes it (``logger=wandb``): Lightning's ``WandbLogger`` with vaelab's run name, group,
config, dashboard images, end of run and failure rule.

::

    <run folder>/wandb/offline-run-<time>-<id>/   an offline run (WANDB_MODE=offline): `wandb sync <that folder>`
                                                 uploads it later
    <run folder>/wandb/run-<time>-<id>/           an online run's local copy (uploaded as the run goes)

What a W&B run holds, and where it comes from:

- **config**: the hyperparameters that tell runs apart, the same as TensorBoard's HParams columns (``model``,
  ``model.beta``, … from :func:`vaelab.tasks.hparams.run_hparams`; the training task hands them to every logger);
- **history**: what Lightning logs (``train/…`` and ``val/…`` each epoch, the test results ``test/…`` once) against
  ``trainer/global_step``, TensorBoard's step; ``dashboard/val/<view>``, the last picture of each dashboard view
  (``wandb.Image``), read from the run's TensorBoard events when it ends (:mod:`vaelab.loggers.event_images`): the
  views draw into TensorBoard only, so ``logger=wandb`` keeps it;
- **summary**: each metric's last value, ``best/val_elbo`` (``best/<monitor>``, the best checkpoint's score),
  ``vaelab/status`` (``metrics.json``'s) and ``vaelab/run_dir`` (the run folder's path);
- **files**: ``vaelab/config.yaml`` (the resolved config) and ``vaelab/metrics.json`` (the run record);
- **name**: the run folder's (``vae_z16_b1_2026-12-04_17-25-14_ld5f7r``; a sweep's job ``0_model.beta=1``);
  **group**: a sweep's jobs share one, named after its folder (``train/multiruns/<time>_<token>``,
  ``${vaelab.sweep_name:null}``); single runs have none; **job type**: the task (``train``);
- **state**: ``finished`` for a completed run, ``failed`` otherwise (ended with exit code 1), set once the run's
  record is written, however it ended; ``vaelab/status`` keeps vaelab's word. Each run is a run of its own
  (``reinit="create_new"``, W&B 0.19.10 on), also when another W&B run is active in the process (a sweep's earlier
  job, the user's own);
- **not the console**: the config group sets W&B's ``settings.console`` to ``off`` (vaelab's log is the run folder's
  ``train.log``), so that a W&B that failed mid-run is not called again at every line printed.

When W&B fails (:class:`~vaelab.loggers.tracking.GuardedTracker`'s rule, as for MLflow): before training (starting
the run, its config) the run stops with one :class:`~vaelab.loggers.tracking.TrackingError` naming the ways out
(``logger=tensorboard``; ``WANDB_MODE=offline`` when the run was to go online); once training has started, the run
goes on without W&B, one warning says so, and ``metrics.json`` gets ``tracking_error``.

W&B is an optional dependency (``pip install .[wandb]``): nothing here imports it until a logger is built.
"""

from __future__ import annotations

import io
import os
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from vaelab.errors import VaelabError
from vaelab.loggers.tracking import (
    GuardedTracker,
    best_metric_name,
    dashboard_images,
    first_line,
    number,
    plain,
    require,
    says,
)
from vaelab.record import COMPLETED, RECORD_FILE

#: the x-axis of every chart: Lightning's step, the one TensorBoard uses
STEP_METRIC = "trainer/global_step"
#: the section of the run's media that holds the dashboard's pictures (``dashboard/val/reconstructions``)
IMAGE_SECTION = "dashboard/"
#: the folder of the run's files that holds vaelab's own (``vaelab/config.yaml``, ``vaelab/metrics.json``)
FILES_FOLDER = "vaelab"
#: W&B's modes that keep the run on this machine
OFFLINE_MODES = ("offline", "dryrun")
#: what W&B says when it has no key to log in with / when its server does not answer
NOT_LOGGED_IN = ("api key", "api_key", "not logged in", "wandb login", "authenticat", "unauthorized")
NO_ANSWER = ("timed out", "timeout", "connection", "network", "name resolution", "unreachable")


class WandbMissingError(VaelabError, ModuleNotFoundError):
    """``logger=wandb`` without W&B installed."""


def require_wandb() -> None:
    """Raise one clear :class:`WandbMissingError` when W&B cannot be imported."""
    require("wandb", "wandb", "W&B (wandb)", "wandb", WandbMissingError)


def exit_code(status: str | None) -> int:
    """The exit code a W&B run ends with for ``metrics.json``'s ``status``: 0 (``finished``) for a completed run,
    1 (``failed``) for any other end, a record that is missing or says ``running`` too."""
    return 0 if status == COMPLETED else 1


def is_offline(mode: str | None) -> bool:
    """Whether W&B keeps the run on this machine: ``mode``, else ``WANDB_MODE``, is ``offline`` (or ``dryrun``)."""
    return str(mode or os.environ.get("WANDB_MODE", "")).lower() in OFFLINE_MODES


def problem(err: BaseException) -> str:
    """What is wrong, going by what W&B raised (``wandb raised <Type>: <first line>``): not logged in, or a server
    that did not answer, each with its fix; else what W&B raised."""
    said = f"wandb raised {first_line(err)}"
    if says(err, NOT_LOGGED_IN):
        return f"W&B is not logged in ({said}): run wandb login, or set WANDB_API_KEY"
    if says(err, NO_ANSWER) or type(err).__name__ == "CommError":
        return f"W&B's server did not answer ({said}): check the network, or WANDB_BASE_URL for a server of your own"
    return said


def ways_out(offline: bool) -> str:
    """How to train anyway: without W&B, or, where the run was to go online, with the run kept on this machine (to
    be uploaded later)."""
    without = "Or train without it: logger=tensorboard"
    if offline:
        return without
    return (f"{without}, or keep the W&B run on this machine: WANDB_MODE=offline (then "
            f"`wandb sync <run folder>/wandb/offline-run-*` uploads it)")


class WandbLogger(GuardedTracker, LightningWandbLogger):
    """Lightning's W&B logger, its run kept under the run folder and named after it (see the module), with vaelab's
    config, files, dashboard images and end of run.

    Args:
        save_dir: the run's folder (``paths.output_dir``): W&B's local copy goes into its ``wandb/``, and the run is
            named after it.
        name: the run's name; default the folder's name.
        project: the W&B project (``${oc.env:WANDB_PROJECT,vaelab}``).
        group: the run's group (``${vaelab.sweep_name:null}``: a sweep's folder; none for a single run).
        job_type: the run's job type (``${task_name}``: ``train``).
        mode: W&B's ``online``, ``offline`` or ``disabled``; None leaves it to W&B (``WANDB_MODE``, ``wandb offline``;
            online by default).
        settings: W&B's settings (``wandb.Settings``, or a mapping of them: ``{"console": "off"}``, as the config
            group gives, keeps the console out of the run: see ``conf/logger/wandb.yaml``).
        log_images: log the last picture of each dashboard view (``val/…`` images in the run's TensorBoard events).
        **kwargs: as Lightning's ``WandbLogger`` (``prefix``, ``log_model``) and ``wandb.init`` (``entity``,
            ``tags``, ``notes``).

    A failure of W&B follows :class:`~vaelab.loggers.tracking.GuardedTracker`'s rule.
    """

    tracker_name = "W&B"

    def __init__(self, save_dir: str, name: str | None = None, project: str = "vaelab", group: str | None = None,
                 job_type: str | None = None, mode: str | None = None, settings: Any = None, log_images: bool = True,
                 **kwargs: Any) -> None:
        require_wandb()
        folder = Path(save_dir).expanduser().resolve()
        if mode:
            kwargs["mode"] = mode
        if settings is not None:  # (a config's mapping as a plain dict, which wandb.init takes)
            kwargs["settings"] = plain(settings) if isinstance(settings, Mapping) else settings
        kwargs.setdefault("reinit", "create_new")  # (a run of its own, never the active one Lightning would take)
        super().__init__(name=name or folder.name, save_dir=str(folder), project=project, group=group,
                         job_type=job_type, **kwargs)
        if self._wandb_init.get("anonymous") is None:  # (Lightning's None: W&B warns that it has no effect)
            self._wandb_init.pop("anonymous", None)
        self.log_images = log_images
        self._run_dir, self._ended, self._offline_mode = folder, False, is_offline(mode)
        self._training = False  # (set by the first metrics: from then on a failure of W&B does not stop the run)
        self.tracking_error = None

    # ------------------------------------------------------------------------------------------------ the run
    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """W&B's run; the first use starts it (:meth:`_start`)."""
        if self._experiment is None and getattr(self, "_attach_id", None) is None:
            self._experiment = self._start()
        return LightningWandbLogger.experiment.fget(self)

    def _start(self) -> Any:
        """Start the W&B run in the run folder, made first: one that cannot be written is refused (W&B would write
        into the system's temporary folder instead), and always a run of its own."""
        import wandb

        folder = self._run_dir
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(f"the run folder {folder} cannot be written")
        run = wandb.init(**self._wandb_init)
        run.define_metric(STEP_METRIC)
        run.define_metric("*", step_metric=STEP_METRIC, step_sync=True)
        run.summary["vaelab/run_dir"] = str(folder)
        return run

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """``params`` as the run's config (the columns of W&B's runs table); the first call starts the run."""
        self._guarded("the run's start", lambda: self.experiment)
        self._guarded("the run's config", lambda: super(WandbLogger, self).log_hyperparams(params))

    @rank_zero_only
    def log_config(self, config: Mapping[str, Any]) -> None:
        """The run's resolved config as the run's file ``vaelab/config.yaml``."""
        import yaml

        text = yaml.safe_dump(plain(config), sort_keys=False, allow_unicode=True)
        self._guarded("the run's config file", lambda: self._save_file("config.yaml", text))

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Lightning's metrics; from the first of them on, a failure of W&B no longer stops the run."""
        self._training = True
        self._guarded(f"the metrics of step {step}", lambda: super(WandbLogger, self).log_metrics(metrics, step))

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Lightning calls this after fitting, again after testing, and on an error: the run stays open for the
        test results and the run folder (:meth:`log_run_folder` ends it); Lightning's checkpoint artifacts
        (``log_model``) are logged here."""
        self._guarded("the checkpoints", lambda: super(WandbLogger, self).finalize(status))

    # ------------------------------------------------------------------------------------------- the run's end
    def _log_folder(self, folder: Path, record: dict[str, Any]) -> None:
        run = self.experiment
        if (folder / RECORD_FILE).is_file():
            self._save_file(RECORD_FILE, (folder / RECORD_FILE).read_text())
        best = record.get("best") or {}
        score = number(best.get("score"))
        if best.get("monitor") and score is not None:
            run.summary[best_metric_name(str(best["monitor"]))] = score
        if self.log_images:
            self._log_images(folder, record)

    def _log_images(self, folder: Path, record: dict[str, Any]) -> None:
        """The last picture of each dashboard view as ``dashboard/<tag>`` (a ``wandb.Image``, captioned with the
        step it was drawn at), in one row at the latest of those steps."""
        import wandb
        from PIL import Image

        images = dashboard_images(folder, record)
        if not images:
            return
        row: dict[str, Any] = {IMAGE_SECTION + image.tag: wandb.Image(Image.open(io.BytesIO(image.png)),
                                                                     caption=f"{image.tag} at step {image.step}")
                               for image in images}
        row[STEP_METRIC] = max(image.step for image in images)
        self.experiment.log(row)

    def _save_file(self, name: str, text: str) -> None:
        """``text`` as the run's file ``vaelab/<name>`` (uploaded with the run)."""
        run = self.experiment
        path = Path(run.dir) / FILES_FOLDER / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        run.save(str(path), base_path=run.dir, policy="now")

    def _finish(self, status: str | None) -> None:
        run = self.experiment
        if status:
            run.summary["vaelab/status"] = status
        run.finish(exit_code=exit_code(status))

    # ------------------------------------------------------------------------- GuardedTracker's hooks: W&B's words
    def _stop_message(self, what: str, err: BaseException) -> str:
        return f"W&B failed while logging {what}, before training. {problem(err)}. {self._ways_out()}"

    def _problem(self, err: BaseException) -> str:
        return problem(err)

    def _kept(self) -> str:
        run_id = getattr(self._experiment, "id", None)
        if not run_id:
            return "no W&B run was started"
        return f"the W&B run {run_id} keeps only what was logged before (W&B ends it when the process exits)"

    def _ways_out(self) -> str:
        return ways_out(self._offline_mode)

    def _has_run(self) -> bool:
        return self._experiment is not None

    def _end_run(self, status: str | None) -> None:
        if self._ended:
            return
        self._ended = True
        self._guarded("the run's end", lambda: self._finish(status))
