"""The two tasks behind the entry points (``train`` for ``src/train.py``, ``evaluate`` for ``src/eval.py``) and what
they share: the run record (``record``), the Hydra job they run in (``hydra_job``), process settings (``runtime``)
and resuming a run (``resume``)."""
