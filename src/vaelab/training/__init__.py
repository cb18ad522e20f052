"""Training a pure model with Lightning: the LightningModule around an :class:`~vaelab.models.Autoencoder` and an
objective (``module``), its exact epoch means (``epoch_sums``) and training in stages (``stages``: ``init_from``,
``trainable``)."""

from vaelab.training.module import AutoencoderModule

__all__ = ["AutoencoderModule"]
