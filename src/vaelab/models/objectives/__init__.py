"""Training objectives: one class per file, chosen by the ``model/objective`` config group.

Each takes the model's encoder/decoder pass over a batch and returns the loss and the terms to log
(:class:`~vaelab.models.objectives.base.Objective`). A new objective is one class here and one YAML file in
``conf/model/objective/``.
"""

from vaelab.models.objectives.aae import AdversarialAutoencoder
from vaelab.models.objectives.base import DataFacts, Objective, ObjectiveValue
from vaelab.models.objectives.beta_tcvae import BetaTCVAE, tc_decomposition
from vaelab.models.objectives.capacity import Capacity
from vaelab.models.objectives.ciwae import CIWAE
from vaelab.models.objectives.contractive import Contractive
from vaelab.models.objectives.dip_vae import DIPVAE
from vaelab.models.objectives.elbo import Elbo
from vaelab.models.objectives.factor_vae import FactorVAE
from vaelab.models.objectives.infovae import InfoVAE
from vaelab.models.objectives.iwae import IWAE
from vaelab.models.objectives.joint_vae import JointVAE
from vaelab.models.objectives.ladder import LadderElbo
from vaelab.models.objectives.miwae import MIWAE
from vaelab.models.objectives.piwae import PIWAE
from vaelab.models.objectives.prior_fit import PriorFit
from vaelab.models.objectives.rae import RegularisedAutoencoder
from vaelab.models.objectives.reconstruction import Reconstruction
from vaelab.models.objectives.sparse import Sparse
from vaelab.models.objectives.vqvae import VQVAE
from vaelab.models.objectives.vqvae2 import VQVAE2
from vaelab.models.objectives.wae import WAE

__all__ = [
    "AdversarialAutoencoder", "BetaTCVAE", "Capacity", "CIWAE", "Contractive", "DataFacts", "DIPVAE", "Elbo",
    "FactorVAE", "InfoVAE", "IWAE", "JointVAE", "LadderElbo", "MIWAE", "Objective", "ObjectiveValue", "PIWAE",
    "PriorFit", "Reconstruction", "RegularisedAutoencoder", "Sparse", "tc_decomposition", "VQVAE", "VQVAE2",
    "WAE"
]
