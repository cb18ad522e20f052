"""Running on a SLURM cluster: which job this process belongs to, and resuming a job SLURM has requeued.

Two ways a vaelab run ends up requeued, and what each needs from vaelab:

- ``hydra/launcher=slurm`` (Hydra's submitit launcher, no sbatch script): SLURM sends SIGUSR2 ``signal_delay_s``
  before the time limit (or on pre-emption); submitit requeues the job (``scontrol requeue``), and the requeued job
  runs the same Hydra job again in the same job folder (``hydra.sweep.dir``/``hydra.job.num``: submitit pickled the
  sweep's config, resolved timestamps included). That job starts with ``ckpt_path=null``.
- An sbatch script of one's own (``#SBATCH --signal=SIGUSR1@120`` and ``srun python src/train.py ...``): Lightning's
  ``SLURMEnvironment(auto_requeue=True)``, which Lightning picks by itself from the ``SLURM_*`` variables, saves
  ``hpc_ckpt_<n>.ckpt`` into ``trainer.default_root_dir`` (the run folder) on SIGUSR1 and requeues the job; the
  requeued job runs the script again. Hydra would give that process a new run folder (a new timestamp), so the
  run folder must be named after the job (:func:`claim_run_stamp`, behind the ``${vaelab.run_stamp:…}`` resolver of
  ``conf/hydra/default.yaml``) for the requeued process to find the folder again.

Either way the requeued process then calls :func:`resume_after_requeue`, which points ``ckpt_path`` at the run
folder's ``checkpoints/last.ckpt``: the end of the last finished epoch, from which a resume is exact (with the
random state of :class:`~vaelab.callbacks.rng_state.RNGStateCallback`). Lightning's ``hpc_ckpt_*.ckpt`` is taken in
the middle of an epoch, which Lightning cannot replay exactly for vaelab's loaders (it restarts the epoch's data);
it is used (by Lightning itself, when ``ckpt_path`` is left unset on SLURM) only when there is no ``last.ckpt``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from vaelab.record import UNFINISHED, read_status

log = logging.getLogger(__name__)

#: SLURM job names Lightning treats as an interactive session rather than a job (``srun --pty bash``, ``salloc``)
INTERACTIVE_NAMES = ("bash", "interactive")


def slurm_job_key(env: Mapping[str, str] | None = None) -> str | None:
    """The id of the SLURM job this process runs in, the same in every task of the job and after a requeue:
    ``<array job id>_<array task id>`` for a task of a job array, else ``SLURM_JOB_ID``. None outside SLURM, and in
    an interactive session (job name ``bash`` or ``interactive``, as Lightning's ``SLURMEnvironment`` has it),
    where several runs share one job id."""
    env = os.environ if env is None else env
    job = env.get("SLURM_JOB_ID")
    if not job or env.get("SLURM_JOB_NAME") in INTERACTIVE_NAMES:
        return None
    array_job, array_task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return job


def restart_count(env: Mapping[str, str] | None = None) -> int:
    """How many times SLURM has restarted (requeued) this job: ``SLURM_RESTART_COUNT``, 0 when unset."""
    env = os.environ if env is None else env
    try:
        return int(env.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


_claimed: str | None = None


def claim_run_stamp(default: str, runs: Path, name: str) -> str:
    """What follows a run folder's description (``<runs>/<name>_<stamp>``): ``default`` (``<date>_<time>_<token>``)
    outside SLURM; inside a SLURM batch job ``slurm-<job>[-<step>]`` (:func:`slurm_job_key`), the same in every task
    of a multi-node step and after a requeue, so that the ranks share one folder and a requeued job finds its
    ``last.ckpt``. Only a job SLURM has restarted (``SLURM_RESTART_COUNT`` > 0) goes on in a folder that holds a run
    that did not finish (:data:`vaelab.record.UNFINISHED`, or a torn record). An ``srun`` step holds one run (in all
    its ranks); in the batch script itself the first free name is claimed by making its folder (``…``, ``…-2``,
    ``…-3``), so two runs of one script never share a folder. The answer is kept for the process: Hydra resolves the
    run folder more than once."""
    global _claimed
    key = slurm_job_key()
    if key is None:
        return default
    if _claimed is not None:
        return _claimed
    step = os.environ.get("SLURM_STEP_ID", "")
    stamp = f"slurm-{key}" + (f"-{step}" if step.isdigit() else "")
    restarted = restart_count() > 0
    for n in range(1, 1000):
        candidate = stamp if n == 1 else f"{stamp}-{n}"
        folder = runs / f"{name}_{candidate}"
        if restarted and folder.is_dir():
            status = read_status(folder)  # None: no record, or one torn by the kill: that run did not finish
            if status is None or status in UNFINISHED:
                _claimed = candidate
                return candidate
            continue
        if step.isdigit():  # an srun step: one run, started in every rank at once, all taking the step's name
            _claimed = candidate
            return candidate
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            continue
        except OSError:  # (an unwritable log_dir: the run-folder check says so)
            pass
        _claimed = candidate
        return candidate
    from vaelab.tasks.run_names import run_id

    return f"{stamp}-{run_id()}"


def _checkpoint_dir(cfg: DictConfig) -> Path | None:
    dirpath = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
    return Path(str(dirpath)) if dirpath else None


def resume_after_requeue(cfg: DictConfig, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """In a job SLURM has requeued (``SLURM_RESTART_COUNT`` >= 1) that was given no ``ckpt_path``: set
    ``cfg.ckpt_path`` to the run's ``last.ckpt`` (in ``callbacks.model_checkpoint.dirpath``, by default
    ``<run folder>/checkpoints``) when it is there. Returns what to add to the run's record (nothing outside a
    requeued SLURM job): the job, its restart count, and the checkpoint resumed from, if any.

    A job that is not requeued never resumes by itself, even if its folder holds a checkpoint (a folder given
    explicitly, or a job id reused in an interactive session): that takes ``ckpt_path=...``.
    """
    key = slurm_job_key(env)
    restarts = restart_count(env)
    if key is None or restarts < 1:
        return {}
    record: dict[str, Any] = {"slurm": {"job": key, "restart_count": restarts}}
    if cfg.get("ckpt_path"):
        return record  # resuming from a checkpoint given explicitly
    folder = _checkpoint_dir(cfg)
    last = folder / "last.ckpt" if folder is not None else None
    if last is None or not last.is_file():
        log.warning("SLURM job %s was requeued (restart %d) but %s holds no last.ckpt: starting over (or from "
                    "Lightning's hpc_ckpt_*.ckpt in the run folder, if it saved one)", key, restarts, folder)
        return record
    with open_dict(cfg):
        cfg.ckpt_path = str(last)
    record["slurm"]["resumed_from"] = str(last)
    log.info("SLURM job %s was requeued (restart %d): resuming from %s", key, restarts, last)
    return record
