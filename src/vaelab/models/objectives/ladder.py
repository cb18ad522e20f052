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
        missing = [name for name in self.term_names if name not in out.extras]
        if missing:
            raise ValueError(f"the ladder objective needs model.code=ladder with one KL per layer (no "
                             f"{', '.join(missing)} in the code's pass)")
        terms = {name: out.extras[name].mean() for name in self.term_names}
        return ObjectiveValue(out.recon.mean() + self.schedule(step) * out.kl.mean(), terms)
