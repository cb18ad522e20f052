"""VQ-VAE-2's objective: the reconstruction, and each level's codebook term and weighted commitment term."""

from __future__ import annotations

from vaelab.models.objectives.base import Objective, ObjectiveValue
from vaelab.models.objectives.vqvae import CODE_TERMS
from vaelab.models.two_level_quantizer import LEVELS

#: the batch terms the two-level code hands over: each of a quantised code's terms, for each level
LEVEL_TERMS = tuple(f"{name}_{level}" for level in LEVELS for name in CODE_TERMS)


class VQVAE2(Objective):
    """loss = −log p(x|z) + Σ_l ‖sg[z_e,l] − e_l‖² + β(step)·Σ_l ‖z_e,l − sg[e_l]‖², l ∈ {top, bottom}: VQ-VAE's
    loss (van den Oord et al. 2017, eq. 3) with one codebook term and one commitment term per level (Razavi et al.
    2019, sec. 3.1 and Algorithm 1), batch means, the reconstruction in nats per image and each term summed over its
    level's grid.

    β is the commitment cost of both levels (``model.beta``; 0.25 in ``model=vqvae2``). The terms come from the
    code (:class:`~vaelab.models.two_level_quantizer.TwoLevelQuantizedCode`, ``model.code=quantized2``), each
    codebook term 0 when that codebook is updated by moving averages instead (the paper's choice). Logged: the
    sums ``codebook`` and ``commitment``, and every level's terms with its codebook's ``perplexity`` and ``usage``
    (``codebook_top``, …, ``usage_bottom``). As for VQ-VAE, the uniform prior's KL is a constant, left out of the
    loss; ``elbo`` is still logged with it.
    """

    needs_posterior = False
    term_names = ("codebook", "commitment", *LEVEL_TERMS)
    beta_name = "commitment"

    def forward(self, model, x, out, step) -> ObjectiveValue:
        terms = self.code_terms(model, out, LEVEL_TERMS, "the VQ-VAE-2 objective needs a two-level quantised code",
                                "use model=vqvae2, or model/code=quantized2 with model/net=vqvae2")
        terms["codebook"] = sum(terms[f"codebook_{level}"] for level in LEVELS)
        terms["commitment"] = sum(terms[f"commitment_{level}"] for level in LEVELS)
        loss = out.recon.mean() + terms["codebook"] + self.schedule(step) * terms["commitment"]
        return ObjectiveValue(loss, terms)
