"""β-TC-VAE: the KL term split into mutual information, total correlation and dimension-wise KL, each weighted.

Chen, Li, Grosse & Duvenaud (2018), *Isolating Sources of Disentanglement in Variational Autoencoders*, NeurIPS.
"""

from __future__ import annotations

import math

import torch

from vaelab.models.distributions import normal_log_prob_per_dimension, standard_normal_log_prob
from vaelab.models.objectives.base import DataFacts, Objective, ObjectiveValue

SAMPLINGS = ("mws", "stratified")


def tc_decomposition(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int, sampling: str = "mws"
) -> dict[str, torch.Tensor]:
    """Minibatch estimates of the three terms of E_p(x)[KL(q(z|x) ‖ p(z))] (Chen et al. 2018, eq. 2):

    * ``mi`` = E[log q(z|x) − log q(z)], the index-code mutual information;
    * ``tc`` = E[log q(z) − Σ_j log q(z_j)], the total correlation of the aggregate posterior q(z);
    * ``dw_kl`` = E[Σ_j log q(z_j) − log p(z)], the dimension-wise KL to the prior.

    Each is a mean over the batch of one z per image. They sum exactly to the batch's one-sample KL estimate
    E[log q(z|x) − log p(z)], whatever the estimate of q(z) (the logs telescope). q(z) = (1/N) Σ_n q(z|x_n) over the
    data set of N images is estimated from the batch's B posteriors, log q(z_i|x_j) for every pair:

    * ``mws``, minibatch weighted sampling (sec. 3 and app. C.1): log q(z_i) ≈ logsumexp_j log q(z_i|x_j) −
      log(N·B), and the same per dimension for q(z_ij). Biased: cheap, and what the paper trains with.
    * ``stratified``: the image's own posterior weighted 1/N and each of the other B − 1 weighted (N − 1)/(N(B − 1)),
      an importance-weighted estimate that is unbiased for q(z_i) when the other images are a uniform draw from
      the rest of the data set (the idea of the paper's minibatch stratified sampling, app. C.2). With N = B it is
      the exact mixture over the batch.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}: choose one of {', '.join(SAMPLINGS)}")
    batch = z.shape[0]
    if dataset_size < 1:
        raise ValueError(f"dataset_size must be >= 1, got {dataset_size}")
    # log q(z_i,d | x_j) for every image i, posterior j and dimension d: (B, B, D)
    pairs = normal_log_prob_per_dimension(z.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0))
    log_qz_x = pairs.diagonal(dim1=0, dim2=1).sum(0)  # log q(z_i | x_i): the diagonal, summed over d
    if sampling == "mws":
        log_w = torch.full((batch, batch), -math.log(dataset_size * batch), dtype=z.dtype, device=z.device)
    else:
        # (no other image when B = 1 or N = 1: the own posterior, weighted 1/N, is the whole estimate)
        other = (dataset_size - 1) / (dataset_size * max(batch - 1, 1))
        log_w = torch.full((batch, batch), math.log(other) if other > 0 else -math.inf, dtype=z.dtype,
                           device=z.device)
        log_w.fill_diagonal_(-math.log(dataset_size))
    log_qz = torch.logsumexp(pairs.sum(2) + log_w, dim=1)
    log_prod_qzj = torch.logsumexp(pairs + log_w.unsqueeze(2), dim=1).sum(1)
    log_pz = standard_normal_log_prob(z)
    return {
        "mi": (log_qz_x - log_qz).mean(),
        "tc": (log_qz - log_prod_qzj).mean(),
        "dw_kl": (log_prod_qzj - log_pz).mean(),
    }


class BetaTCVAE(Objective):
    """loss = recon + α·MI + β(step)·TC + γ·dimension-wise KL (Chen et al. 2018, eq. 4), per image, batch mean.

    α = γ = 1 and β > 1 penalise the total correlation alone, the setting of the paper; α = β = γ = 1 is the VAE's
    objective with a minibatch estimate of the KL. β comes from the model's β schedule (``model.beta``). The data
    set's size N, which the estimates of q(z) need, is handed in when fitting starts and kept in the
    checkpoint (or set ``dataset_size``).
    """

    term_names = ("mi", "tc", "dw_kl")

    def __init__(self, alpha: float = 1.0, gamma: float = 1.0, sampling: str = "mws",
                 dataset_size: int | None = None, schedule=None) -> None:
        super().__init__(schedule)
        if sampling not in SAMPLINGS:
            raise ValueError(f"model.objective.sampling = {sampling!r} is invalid: choose one of "
                             f"{', '.join(SAMPLINGS)}")
        if alpha < 0 or gamma < 0:
            raise ValueError(f"β-TC-VAE weights must be >= 0, got alpha={alpha}, gamma={gamma}")
        self.alpha, self.gamma, self.sampling = float(alpha), float(gamma), sampling
        self.register_buffer("dataset_size", torch.tensor(int(dataset_size or 0)))

    def bind(self, data: DataFacts) -> None:
        if int(self.dataset_size) > 0:
            return
        size = data.num_train_images
        if not size:
            raise ValueError("β-TC-VAE needs the size of the training set: the data gives none, so set "
                             "model.objective.dataset_size")
        self.dataset_size.fill_(int(size))

    def forward(self, model, x, out, step) -> ObjectiveValue:
        size = int(self.dataset_size)
        if size <= 0:
            raise ValueError("β-TC-VAE needs the size N of the training set, which is handed in when "
                             "fitting starts: fit first, or set model.objective.dataset_size")
        terms = tc_decomposition(out.z, out.mu, out.logvar, size, self.sampling)
        kl_part = self.alpha * terms["mi"] + self.schedule(step) * terms["tc"] + self.gamma * terms["dw_kl"]
        return ObjectiveValue(out.recon.mean() + kl_part, terms)
