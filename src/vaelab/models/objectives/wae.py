"""The Wasserstein autoencoder with the MMD penalty (WAE-MMD): a deterministic code pulled towards the prior as a
distribution, not image by image.

Tolstikhin, Bousquet, Gelly & Schölkopf (2018), *Wasserstein Auto-Encoders*, ICLR.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vaelab.errors import ConfigError
from vaelab.models.kernels import CodeKernel, mmd_batch_problems
from vaelab.models.objectives.base import DataFacts, Objective, ObjectiveValue

#: the scales the authors' released code sums the IMQ kernel over (multiples of C = 2·d_z·σ_z²)
PAPER_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def prior_draws(codes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """As many draws of p(z) = N(0, I) as there are ``codes``, on their device (Algorithm 2's z₁ … zₙ)."""
    return torch.randn(codes.shape, generator=generator, device=codes.device, dtype=codes.dtype)


class WAE(Objective):
    """loss = recon + λ(step) · MMD²_k(q_z, p_z), recon per image, batch mean; the MMD² estimated without bias from
    the batch's codes z̃ᵢ = enc(xᵢ) and as many draws zᵢ ~ p(z) = N(0, I) (Tolstikhin et al. 2018, Algorithm 2,
    eq. 4 with the MMD as D_Z).

    The cost c(x, G(z̃)) is the model's reconstruction term (−log p(x|z), the summed binary cross-entropy for the
    Bernoulli likelihood, the scaled squared error for the Gaussian one). λ is ``model.beta`` (the paper's λ = 10 on
    MNIST), under the name ``lambda``. The kernel is :class:`~vaelab.models.kernels.CodeKernel`: by default the
    inverse multiquadratic summed over :data:`PAPER_SCALES`, as the authors' code trains it (sec. 4 gives the single
    C = 2·d_z·σ_z²: ``scales: [1.0]``). The preset's code is a point with the normal prior
    (``model.code.prior=normal``), which images are generated from; a Gaussian code gives the WAE with a random
    encoder, its codes the posterior's draws.

    Logged: ``mmd`` (the MMD² estimate: unbiased, so near zero it can be negative).

    Args:
        kernel: ``imq`` or ``rbf``.
        scales: the multiples s of C the kernel is summed over.
    """

    needs_posterior = False
    term_names = ("mmd",)
    beta_name = "lambda"

    def __init__(self, kernel: str = "imq", scales: Sequence[float] = PAPER_SCALES, schedule=None) -> None:
        super().__init__(schedule)
        self.kernel = CodeKernel(kernel, scales)

    def bind(self, data: DataFacts) -> None:
        """Refuse, when fitting starts, batch sizes that leave a batch of one code (it has no pair for the MMD)."""
        problems = mmd_batch_problems("the WAE", data.batch_sizes, data.shards)
        if problems:
            raise ConfigError("Invalid configuration, nothing was trained:\n" + "\n".join(f"  {p}" for p in problems))

    def forward(self, model, x, out, step) -> ObjectiveValue:
        codes = out.z.flatten(1)
        mmd = self.kernel.mmd(codes, prior_draws(codes))
        return ObjectiveValue(out.recon.mean() + self.schedule(step) * mmd, {"mmd": mmd})
