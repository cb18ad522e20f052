"""Active latent units (Burda et al. 2016, sec. 5.2): the one computation, for training and evaluation alike.

A latent unit u is active when A_u = Cov_x(E_{q(z|x)}[z_u]) exceeds a threshold (0.01 in the paper): an inactive
unit's posterior mean barely moves with x, so the decoder cannot use it.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

#: The paper's threshold on Cov_x(E_q[z_u]).
ACTIVE_UNIT_THRESHOLD = 0.01


class ActiveUnits(Metric):
    """Counts active units from posterior means fed batch by batch; sums in float64, synchronised across processes.

    ``update(mu)`` takes posterior means ``(B, D)``; :meth:`variances` gives Cov_x(E_q[z_u]) per unit (the variance
    of the data set's empirical distribution, divisor N, so one image gives 0 rather than NaN); ``compute()`` the
    number of units above ``threshold``.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, latent_dim: int, threshold: float = ACTIVE_UNIT_THRESHOLD, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold = float(threshold)
        zeros = torch.zeros(int(latent_dim), dtype=torch.float64)
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("mu_sum", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("mu_sq_sum", default=zeros.clone(), dist_reduce_fx="sum")

    def update(self, mu: torch.Tensor) -> None:
        if mu.dim() != 2 or mu.shape[1] != self.mu_sum.shape[0]:
            raise ValueError(f"expected posterior means of shape (N, {self.mu_sum.shape[0]}), got {tuple(mu.shape)}")
        mu = mu.detach().to(torch.float64)
        self.count += mu.shape[0]
        self.mu_sum += mu.sum(0)
        self.mu_sq_sum += mu.pow(2).sum(0)

    def variances(self) -> torch.Tensor:
        """Cov_x(E_q[z_u]) for every unit u, from the states (as synchronised by the caller)."""
        mean = self.mu_sum / self.count
        return (self.mu_sq_sum / self.count - mean.pow(2)).clamp_min(0.0)

    def compute(self) -> torch.Tensor:
        return (self.variances() > self.threshold).sum()


def posterior_mean_variance(mu_over_dataset: torch.Tensor) -> torch.Tensor:
    """Cov_x(E_{q(z|x)}[z_u]) for every unit u from all posterior means at once (``(N, D)``), in float64."""
    if mu_over_dataset.dim() != 2:
        raise ValueError(f"expected posterior means of shape (N, D), got {tuple(mu_over_dataset.shape)}")
    metric = ActiveUnits(mu_over_dataset.shape[1])
    metric.update(mu_over_dataset)
    return metric.variances()


def active_units(mu_over_dataset: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """How many of the units are active over the posterior means ``(N, D)`` of a data set."""
    return int((posterior_mean_variance(mu_over_dataset) > threshold).sum().item())
