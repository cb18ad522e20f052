"""Models: the pure model (:class:`Autoencoder`: encoder, code, decoder, likelihood), its parts (nets, codes,
distributions, likelihoods, importance weighting, samplers), the objectives (losses) and schedules (β). Plain
PyTorch: nothing here imports Lightning (the module that trains a pure model is :mod:`vaelab.training`)."""

from vaelab.models.autoencoder import Autoencoder
from vaelab.models.output import AutoencoderOutput

__all__ = ["Autoencoder", "AutoencoderOutput"]
