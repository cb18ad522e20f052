"""The two tasks behind the entry points (``train`` for ``src/train.py``, ``evaluate`` for ``src/eval.py``) and what
they share: the run record (``record``), the Hydra job they run in (``hydra_job``), process settings (``runtime``),
resuming a run (``resume``) and the names of run folders (``naming``)."""

# The resolvers of conf/hydra/ (run folder names), in every process that runs a task: also where Hydra runs a job in
# a process of its own (joblib, submitit), which resolves that job's folder before running it.
from vaelab.tasks import naming  # noqa: F401
