"""Callbacks that show the model to a person in TensorBoard. They read only the model's AutoencoderOutput."""

from vaelab.callbacks.base import DashboardCallback, tensorboard_writer
from vaelab.callbacks.codes import LatentHistograms, Projector
from vaelab.callbacks.health import CollapseAlarm, code_health
from vaelab.callbacks.images import LatentTraversal, PriorSamples, ReconstructionGrid
from vaelab.callbacks.interpolation import Interpolations, LatentManifold
from vaelab.callbacks.latents import KLPerDimension, LatentScatter

__all__ = [
    "CollapseAlarm",
    "DashboardCallback",
    "Interpolations",
    "KLPerDimension",
    "LatentHistograms",
    "LatentManifold",
    "LatentScatter",
    "LatentTraversal",
    "PriorSamples",
    "Projector",
    "ReconstructionGrid",
    "code_health",
    "tensorboard_writer",
]
