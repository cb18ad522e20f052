"""InfoVAE: the ELBO's KL reweighted and a divergence of the aggregate posterior q(z) from the prior added, here
the MMD (the paper's MMD-VAE).

Zhao, Song & Ermon (2019), *InfoVAE: Balancing Learning and Inference in Variational Autoencoders*, AAAI.
"""

from __future__ import annotations

from collections.abc import Sequence

from vaelab.errors import ConfigError
from vaelab.models.kernels import CodeKernel, mmd_batch_problems
from vaelab.models.objectives.base import DataFacts, Objective, ObjectiveValue
from vaelab.models.objectives.wae import prior_draws


class InfoVAE(Objective):
    """loss = recon + (1 − α) · KL(q(z|x) ‖ p(z)) + (α + λ(step) − 1) · MMD²(q(z), p(z)), recon and KL per image,
    batch mean (Zhao et al. 2019, eq. 6, the negative of the InfoVAE objective with D = MMD).

    α weighs the mutual information of x and z, λ the divergence of the aggregate posterior q(z) from the prior.
    α = 0, λ = 1 is the ELBO (the MMD's weight is zero); α = 1 drops the per-image KL (recon + λ·MMD²). λ is
    ``model.beta`` (under the name ``lambda``), α is ``model.objective.alpha``; the defaults, α = 0 and λ = 1000,
    make an MMD-VAE that keeps the KL (the MMD weighted 999). The MMD² is the unbiased estimate between the batch's
    posterior draws z ~ q(z|x) (draws of q(z)) and as many prior draws, under
    :class:`~vaelab.models.kernels.CodeKernel` (default the Gaussian kernel with 2ℓ² = 2·d_z: ``kernel``,
    ``scales``). Both weights must be ≥ 0 at every step: α ≤ 1 and
    α + λ ≥ 1 at the β schedule's start and target.

    Logged: ``mmd`` (the MMD² estimate, which can be negative near q(z) = p(z)).
    """

    term_names = ("mmd",)
    beta_name = "lambda"

    def __init__(self, alpha: float = 0.0, kernel: str = "rbf", scales: Sequence[float] = (1.0,),
                 schedule=None) -> None:
        super().__init__(schedule)
        if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and alpha <= 1.0
                and alpha > float("-inf")):
            raise ConfigError(f"model.objective.alpha = {alpha!r} is invalid: it must be a finite number <= 1 (the "
                              "KL's weight is 1 - alpha), e.g. 0 (the MMD-VAE) or 1 (no KL)")
        self.alpha = float(alpha)
        lowest = min(self.schedule(0), self.schedule.beta)  # (the schedules rise from their start to model.beta)
        if self.alpha + lowest - 1.0 < 0.0:
            raise ConfigError(f"model.beta = {self.schedule.beta!r} (InfoVAE's lambda) is invalid with "
                              f"model.objective.alpha = {alpha!r}: the MMD's weight alpha + lambda - 1 would be "
                              f"{self.alpha + lowest - 1.0:g} (lambda = {lowest:g} where the beta schedule starts); "
                              "it must be >= 0 at every step, so lambda >= 1 - alpha, e.g. model.beta=1000 with a "
                              "constant schedule")
        self.kernel = CodeKernel(kernel, scales)

    def bind(self, data: DataFacts) -> None:
        """Refuse, when fitting starts, batch sizes that leave a batch of one code (it has no pair for the MMD)."""
        problems = mmd_batch_problems("InfoVAE", data.batch_sizes, data.shards)
        if problems:
            raise ConfigError("Invalid configuration, nothing was trained:\n" + "\n".join(f"  {p}" for p in problems))

    def divergence_weight(self, step: int) -> float:
        """α + λ(step) − 1, the MMD's weight."""
        return self.alpha + self.schedule(step) - 1.0

    def forward(self, model, x, out, step) -> ObjectiveValue:
        codes = out.z.flatten(1)
        mmd = self.kernel.mmd(codes, prior_draws(codes))
        loss = out.recon.mean() + (1.0 - self.alpha) * out.kl.mean() + self.divergence_weight(step) * mmd
        return ObjectiveValue(loss, {"mmd": mmd})
