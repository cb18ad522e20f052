"""The two tasks behind the entry points (``train`` for ``src/train.py``, ``evaluate`` for ``src/eval.py``) and what
they share: writing the run's record (``record``), the Hydra job they run in (``hydra_job``), process settings
(``runtime``), resuming a run (``resume``), the names of run folders (``run_names``), the HParams columns
(``hparams``), the config resolvers (``resolvers``) and SLURM (``cluster``)."""

# The resolvers of conf/hydra/ (run folder names), in every process that runs a task: also where Hydra runs a job in
# a process of its own (joblib, submitit), which resolves that job's folder before running it.
from vaelab.tasks import resolvers  # noqa: F401
