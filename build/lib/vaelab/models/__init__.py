"""Models: the pure model (:class:`Autoencoder`: encoder, code, decoder, likelihood), its parts (nets, codes,
distributions, likelihoods, importance weighting), the objectives (losses) and schedules (β), and the Lightning
module that trains a pure model on an objective (:class:`AutoencoderModule`)."""

from vaelab.models.autoencoder import Autoencoder
from vaelab.models.module import AutoencoderModule
from vaelab.models.output import AutoencoderOutput

__all__ = ["Autoencoder", "AutoencoderModule", "AutoencoderOutput"]
