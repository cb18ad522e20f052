"""The dashboard: views that show the model to a person in TensorBoard, each a Lightning callback reading only the
model's :class:`~vaelab.models.AutoencoderOutput` (``base``: when and on which fixed batch to draw; ``budget``: the
dashboard's share of the wall time), and what only they use (``grids``, ``figures``, ``health``)."""

from vaelab.dashboard.base import DashboardCallback
from vaelab.dashboard.codes import LatentHistograms, Projector
from vaelab.dashboard.health import CollapseAlarm, code_health
from vaelab.dashboard.images import LatentTraversal, PriorSamples, ReconstructionGrid
from vaelab.dashboard.interpolation import Interpolations, LatentManifold
from vaelab.dashboard.latents import KLPerDimension, LatentScatter

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
]
