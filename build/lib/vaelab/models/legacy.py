"""Checkpoints written before the pure model was split from the Lightning module (vaelab up to 8badfa6) still load.

Then the module held the encoder and decoder itself (state_dict keys ``encoder.…``, ``decoder.…``) and the objective
decided whether the code was a point (the autoencoder's ``Reconstruction``) or a Gaussian posterior; now the pure
model is the module's ``model`` (``model.encoder.…``) and the code is a setting of its own (``code``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: the submodules of the pure model that older checkpoints kept at the top of the module
MODEL_PARTS = ("encoder.", "decoder.")
POINT_OBJECTIVES = ("vaelab.models.objectives.Reconstruction",
                    "vaelab.models.objectives.reconstruction.Reconstruction")


def code_of_objective(objective: Mapping[str, Any] | None) -> dict[str, str]:
    """The code an older checkpoint's objective implied: a point for the autoencoder, else a Gaussian posterior."""
    target = (objective or {}).get("_target_", "")
    if target in POINT_OBJECTIVES:
        return {"_target_": "vaelab.models.codes.PointCode"}
    return {"_target_": "vaelab.models.codes.GaussianCode"}


def upgrade_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` with the older top-level ``encoder.…``/``decoder.…`` keys moved under ``model.`` (in place, and
    returned); a current one is left as it is."""
    for key in [k for k in state_dict if k.startswith(MODEL_PARTS)]:
        state_dict["model." + key] = state_dict.pop(key)
    return state_dict


def upgrade_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """An older checkpoint made current in place (keys and the ``code`` hyperparameter); returned for chaining."""
    if isinstance(checkpoint.get("state_dict"), dict):
        upgrade_state_dict(checkpoint["state_dict"])
    hparams = checkpoint.get("hyper_parameters")
    if isinstance(hparams, dict) and hparams.get("code") is None and "latent_dim" in hparams:
        hparams["code"] = code_of_objective(hparams.get("objective"))
    return checkpoint
