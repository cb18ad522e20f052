"""Process-wide settings that make training cheaper without changing what it computes."""

from __future__ import annotations

import ctypes
import os
import warnings


def skip_failing_nvml_probe() -> bool:
    """Stop PyTorch from retrying to load NVML at every optimizer step on a machine that has none.

    Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` (so that checking for CUDA does not initialise it). Adam's
    ``step`` asks ``torch.accelerator.is_available()`` each time, and with that setting a CUDA build of PyTorch
    tries to ``dlopen`` NVML on every call when the machine has no NVIDIA driver (its cost is in the README's
    performance notes). Where NVML cannot be loaded PyTorch falls back to the CUDA runtime's device count
    anyway, so switching the NVML check off there changes no answer, only the cost. Returns True if it did.
    """
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1":
        return False
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"
        return True
    return False


def quiet_irrelevant_warnings() -> None:
    """Silence two warnings Lightning prints on every vaelab run that ask nothing of the user.

    - "The number of training batches (…) is smaller than the logging interval": vaelab logs epoch means (from
      running sums), never per-step values, so ``log_every_n_steps`` has nothing to throttle.
    - "``isinstance(treespec, LeafSpec)`` is deprecated": Lightning's own ``_pytree`` calling an API this torch
      deprecates; nothing in a user's code or config causes it.

    Every other warning is left as it is.
    """
    warnings.filterwarnings("ignore", message=r"The number of training batches .* logging interval")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
