"""TensorBoard as vaelab writes it: one TensorBoard run per run folder, an HParams entry for every run, and the test
results as a table rather than one-point charts.

- :class:`TensorBoardLogger` (``logger=tensorboard``): Lightning's, writing its events straight into the run folder
  (so TensorBoard's run name is the folder's name); its ``log_hyperparams`` (given, when the Trainer is built, the
  hyperparameters that tell runs apart, which the training task works out) writes the HParams plugin's session
  start, and ``log_config`` the resolved config as a text card; ``test/…`` scalars are kept out of the charts (they
  are in ``metrics.json`` and in the results card and HParams metrics that
  :class:`vaelab.callbacks.summary.RunSummary` writes at the end).
- :func:`write_run_summary`: the final metrics as ``hparams/…`` scalars (the HParams tab's metric columns), a
  results text card, and the session's end status.

No HParams *experiment* summary is written: TensorBoard would take the first one it finds in any run as the
experiment of the whole log folder (its hyperparameters, metrics and the values of each), hiding what other runs
logged. Without one, it gathers the hyperparameters from every run's session start and the metrics from every
run's scalars, so runs of different models and sweeps sit in one table.
"""

from __future__ import annotations

import os
import time
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import Container, OmegaConf

#: the text cards
CONFIG_TAG, RESULTS_TAG = "run/config", "run/results"
#: the prefix of the scalars that hold a run's final metrics, for the HParams tab
HPARAMS_PREFIX = "hparams/"


def session_start_summary(hparams: Mapping[str, Any], group_name: str, start_time_secs: float | None = None):
    """TensorBoard's HParams session start (``_hparams_/session_start_info``) for ``hparams`` (scalars only)."""
    from tensorboard.plugins.hparams import summary_v2

    return summary_v2.hparams_pb(dict(hparams), trial_id=group_name, start_time_secs=start_time_secs)


def session_end_summary(status: str, end_time_secs: float | None = None):
    """TensorBoard's HParams session end (``_hparams_/session_end_info``): ``success``, ``failure`` (TensorBoard
    has no status for an interrupted run: that is a failure too) or ``running``."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    info = plugin_data_pb2.SessionEndInfo(
        status=api_pb2.Status.Value(f"STATUS_{status.upper()}"),
        end_time_secs=time.time() if end_time_secs is None else end_time_secs,
    )
    summary = summary_pb2.Summary()
    summary.value.add(
        tag=metadata.SESSION_END_INFO_TAG,
        metadata=metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(session_end_info=info)),
        tensor=metadata.NULL_TENSOR,
    )
    return summary


def config_markdown(params: Mapping[str, Any]) -> str:
    """The resolved config as a YAML code block (TensorBoard's text cards render Markdown)."""
    return "```yaml\n" + OmegaConf.to_yaml(OmegaConf.create(dict(params))).rstrip() + "\n```"


def write_run_summary(writer: Any, metrics: Mapping[str, float], markdown: str, status: str, step: int) -> None:
    """The end of a run in its TensorBoard events: ``metrics`` as ``hparams/<name>`` scalars (the HParams tab's
    metric columns), ``markdown`` as the results card, and the HParams session's end ``status``."""
    for name, value in metrics.items():
        writer.add_scalar(f"{HPARAMS_PREFIX}{name}", value, step)
    writer.add_text(RESULTS_TAG, markdown, step)
    writer._get_file_writer().add_summary(session_end_summary(status), step)  # (as Lightning's log_hyperparams)
    writer.flush()


def trial_name(run_dir: str | os.PathLike, log_root: str | os.PathLike | None = None) -> str:
    """The HParams tab's Trial ID of the run in ``run_dir``: its path under ``log_root`` (``paths.log_dir``), which
    is its TensorBoard run name under ``tensorboard --logdir logs`` (``train/runs/vae_z16_b1_<date>_<time>_<token>``,
    ``train/multiruns/<sweep>/<job>``); the absolute path for a run outside it. Unique either way, so TensorBoard
    never averages two runs as one trial."""
    folder = Path(os.path.abspath(run_dir))
    if log_root is not None:
        root = Path(os.path.abspath(log_root))
        if folder != root and folder.is_relative_to(root):
            return folder.relative_to(root).as_posix()
    return str(folder)


def tensorboard_writer(trainer: Any) -> Any | None:
    """The ``SummaryWriter`` of the run's TensorBoard logger, or None when there is none."""
    for logger in trainer.loggers:
        if isinstance(logger, LightningTensorBoardLogger):
            return logger.experiment
    return None


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoard logger with vaelab's HParams, config card and test results (see the module).

    Args:
        save_dir: the run folder: events go straight into it (``name`` and ``version`` empty).
        skip_prefixes: metrics kept out of TensorBoard's charts (by default the test metrics: one point each, they
            are a table, see :class:`vaelab.callbacks.summary.RunSummary`). ``[]`` charts everything.
        log_root: the folder of all runs (``paths.log_dir``): the HParams Trial ID is the run's path under it
            (:func:`trial_name`).
        **kwargs: as Lightning's ``TensorBoardLogger``.
    """

    def __init__(self, save_dir: str, name: str | None = "", version: int | str | None = "",
                 skip_prefixes: list[str] | tuple[str, ...] = ("test/",), log_root: str | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("default_hp_metric", False)
        super().__init__(save_dir=save_dir, name=name, version=version, **kwargs)
        self.skip_prefixes = tuple(skip_prefixes)
        self.log_root = log_root
        self._session_started = False

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        kept = {k: v for k, v in metrics.items() if not (self.skip_prefixes and k.startswith(self.skip_prefixes))}
        if len(kept) < len(metrics) and set(kept) <= {"epoch"}:
            # Only Lightning's own epoch counter is left (testing after fitting): without the test metrics it would
            # be a lone point of a jump (the epoch after the last one) at the last step. Write nothing.
            return
        super().log_metrics(kept, step)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, metrics: dict[str, Any] | None = None,
                        step: int | None = None) -> None:
        """Keep ``params`` for ``hparams.yaml`` (as Lightning does) and write, the first time, the HParams session
        start with their scalar values (flattened, ``model.beta``; the training task hands in the hyperparameters
        that tell runs apart, :func:`vaelab.tasks.hparams.run_hparams`); ``metrics``, if given, are logged as scalars
        (no HParams experiment summary: see the module)."""
        params = _convert_params(params)
        if isinstance(params, Container):
            params = OmegaConf.to_container(params, resolve=True)
        self.hparams = OmegaConf.merge(self.hparams, params) if isinstance(self.hparams, Container) else {
            **self.hparams, **params}
        if not self._session_started:
            self._session_started = True
            hparams = {k: v for k, v in _flatten_dict(params, delimiter=".").items()
                       if isinstance(v, (bool, int, float, str))}
            # the session group: the run's name (its own, so TensorBoard does not average runs together)
            group = trial_name(self.log_dir, self.log_root)
            self.experiment._get_file_writer().add_summary(session_start_summary(hparams, group), step or 0)
        if metrics:
            self.log_metrics(metrics, step)

    @rank_zero_only
    def log_config(self, config: Mapping[str, Any]) -> None:
        """The run's resolved config as a text card (``run/config``)."""
        self.experiment.add_text(CONFIG_TAG, config_markdown(config), 0)
