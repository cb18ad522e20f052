"""The second stage of a two-stage model: fit the code's learned prior to the codes of the frozen first stage."""

from __future__ import annotations

from vaelab.models.objectives.base import Objective, ObjectiveValue


class PriorFit(Objective):
    """loss = −log p_θ(k(x)), batch mean: the negative log-likelihood, under the code's learned prior p_θ, of the
    codes k(x) the trained first stage gives the images: the autoregressive prior fitted to the latents after
    training (van den Oord et al. 2017, sec. 3.2).

    For a code with a one-hot q(z|x), such as VQ-VAE's, this is the code's KL(q(z|x) ‖ p_θ(z)), so the logged
    ``elbo`` rises as the prior learns. Only the prior should train: the model's ``trainable: [code.prior]`` freezes
    the rest (``model=vqvae_prior model.init_from=<stage-1 checkpoint>``, see
    :class:`~vaelab.training.module.AutoencoderModule`). No β: ``model.beta`` plays no part.
    """

    needs_posterior = False
    beta_name = None

    def forward(self, model, x, out, step) -> ObjectiveValue:
        if getattr(model.code, "prior", None) is None:
            raise ValueError(f"the PriorFit objective trains the code's learned prior, but this "
                             f"{type(model.code).__name__} has none: set model.code.prior (model=vqvae_prior)")
        return ObjectiveValue(out.kl.mean())

    def weights(self, step: int) -> dict[str, float]:
        return {}

    def schedules(self) -> list:
        return []
