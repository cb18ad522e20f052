"""vaelab: autoencoders (AE, VAE, β-VAE and their family) on PyTorch Lightning and Hydra.

From Python: ``vaelab.train([...overrides])`` and ``vaelab.evaluate(ckpt_path, [...overrides])`` run the tasks and
return their records (:mod:`vaelab.api`); ``vaelab.load(ckpt_path)`` gives the trained pure model of a checkpoint, of
a folder that ``model.save_pretrained(folder)`` wrote, or of one on the Hugging Face Hub (``"hf://owner/name"``)
(:func:`vaelab.models.checkpoint.load`).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["evaluate", "load", "train"]


def __getattr__(name: str) -> Any:
    # (imported when first asked for, so that `import vaelab` stays light)
    if name == "load":
        from vaelab.models.checkpoint import load

        return load
    if name in ("train", "evaluate"):
        from vaelab import api

        return getattr(api, name)
    raise AttributeError(f"module 'vaelab' has no attribute {name!r}")
