"""Callbacks that show the model to a person in TensorBoard. They read only the model's AutoencoderOutput."""

from vaelab.callbacks.base import DashboardCallback, tensorboard_writer
from vaelab.callbacks.images import LatentTraversal, PriorSamples, ReconstructionGrid
from vaelab.callbacks.latents import KLPerDimension, LatentScatter

__all__ = [
    "DashboardCallback",
    "KLPerDimension",
    "LatentScatter",
    "LatentTraversal",
    "PriorSamples",
    "ReconstructionGrid",
    "tensorboard_writer",
]
