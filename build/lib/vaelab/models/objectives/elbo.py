"""The evidence lower bound with a weight on its KL term: the VAE and the β-VAE."""

from __future__ import annotations

from vaelab.models.objectives.base import Objective, ObjectiveValue


class Elbo(Objective):
    """loss = E_q[−log p(x|z)] + β(step) · KL(q(z|x) ‖ N(0, I)), per image, averaged over the batch.

    β = 1 is the negative ELBO of the VAE (Kingma & Welling 2014, eq. 3 and 10); β > 1 the β-VAE (Higgins et al.
    2017, eq. 4); a β schedule gives KL warm-up (Bowman et al. 2016) or cyclical annealing (Fu et al. 2019). The
    reconstruction term is a one-sample estimate, the KL is in closed form.
    """

    def forward(self, model, x, out, step) -> ObjectiveValue:
        return ObjectiveValue(out.recon.mean() + self.schedule(step) * out.kl.mean())
