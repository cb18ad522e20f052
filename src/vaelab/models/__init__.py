"""Models: nets (architectures), objectives (loss terms), schedules (β) and the LightningModule tying them."""

from vaelab.models.autoencoder import AutoencoderModule
from vaelab.models.output import AutoencoderOutput

__all__ = ["AutoencoderModule", "AutoencoderOutput"]
