"""The importance-weighted autoencoder's objective: a tighter bound than the ELBO, from K posterior samples."""

from __future__ import annotations

from vaelab import rules
from vaelab.models.importance import importance_weighted_bound
from vaelab.models.objectives.base import Objective, ObjectiveValue


class IWAE(Objective):
    """loss = −L_K, the negative importance-weighted bound with K samples per image (Burda et al. 2016, eq. 8),
    batch mean.

    L_1 is the ELBO (with a one-sample KL instead of the closed form); L_K rises with K towards log p(x). The K
    samples are decoded as one batch of K·B codes. The logged ``iw_bound`` is L_K in nats per image (a bound on
    log p(x)); the ELBO terms (recon, KL, elbo) are still logged from the model's own one-sample pass, so
    ``val/elbo`` stays comparable with the other objectives. No β: ``model.beta`` plays no part.
    """

    term_names = ("iw_bound",)
    beta_name = None

    def __init__(self, k: int = 5, schedule=None) -> None:
        super().__init__(schedule)
        rules.check("model.objective.k", k)
        self.k = int(k)

    def forward(self, model, x, out, step) -> ObjectiveValue:
        bound = importance_weighted_bound(model, x, out.features, self.k).mean()
        return ObjectiveValue(-bound, {"iw_bound": bound})

    def weights(self, step: int) -> dict[str, float]:
        return {}

    def schedules(self) -> list:
        return []
