"""Models: nets (architectures), distributions and likelihoods (the maths of the terms), importance weighting,
objectives (the losses), schedules (β), and the LightningModule tying them together."""

from vaelab.models.autoencoder import AutoencoderModule
from vaelab.models.output import AutoencoderOutput

__all__ = ["AutoencoderModule", "AutoencoderOutput"]
