"""The Ladder VAE's objective: the ELBO of a hierarchy of latent layers, each layer's KL logged on its own."""

from __future__ import annotations

from collections.abc import Sequence

from vaelab.models.objectives.base import Objective, ObjectiveValue


class LadderElbo(Objective):
    """loss = E_q[−log p(x|z_1)] + β(step)·Σ_i KL_i, per image, averaged over the batch (Sønderby et al. 2016, with
    KL warm-up through the β schedule), and each layer's KL logged as ``kl_layer<i>`` (1 at the bottom).

    The KLs are the hierarchical code's (:class:`vaelab.models.ladder_code.HierarchicalCode`), in its pass's
    ``extras``: ``latent_dims`` (``model.code.latent_dims``) says how many there are.
    """

    def __init__(self, latent_dims: Sequence[int], schedule=None) -> None:
        super().__init__(schedule)
        self.term_names = tuple(f"kl_layer{i + 1}" for i in range(len(latent_dims)))

    def forward(self, model, x, out, step) -> ObjectiveValue:
        kls = self.code_terms(model, out, self.term_names,
                              "the Ladder VAE objective needs a hierarchical code with one KL per layer",
                              "use model=hvae, or model/code=ladder")
        terms = {name: kl.mean() for name, kl in kls.items()}
        return ObjectiveValue(out.recon.mean() + self.schedule(step) * out.kl.mean(), terms)
