"""VQ-VAE's objective: the reconstruction, the codebook term and the weighted commitment term."""

from __future__ import annotations

from vaelab.models.objectives.base import Objective, ObjectiveValue

#: the batch terms a quantised code hands over (vaelab.models.quantizer.QuantizedCode)
CODE_TERMS = ("codebook", "commitment", "perplexity", "usage")


class VQVAE(Objective):
    """loss = −log p(x|z_q(x)) + ‖sg[z_e(x)] − e‖² + β(step)·‖z_e(x) − sg[e]‖², batch means, the reconstruction in
    nats per image and the two codebook terms summed over the image's grid (van den Oord et al. 2017, eq. 3).

    β is the commitment cost, from the model's β schedule (``model.beta``; 0.25 in ``model=vqvae``, the paper's
    value). The codebook and commitment terms come from the code (:class:`~vaelab.models.quantizer.QuantizedCode`,
    ``model.code=quantized``), the codebook term 0 when the codebook is updated by moving averages instead. Logged
    with them: the codebook's ``perplexity`` and ``usage`` over the batch. The uniform prior's KL is a constant, so
    it is left out of the loss, as in the paper (sec. 3.2); ``elbo`` is still logged with it.
    """

    needs_posterior = False
    term_names = CODE_TERMS
    beta_name = "commitment"

    def forward(self, model, x, out, step) -> ObjectiveValue:
        terms = self.code_terms(model, out, CODE_TERMS, "the VQ-VAE objective needs a quantised code",
                                "use model=vqvae, or model/code=quantized with model/net=vqvae")
        loss = out.recon.mean() + terms["codebook"] + self.schedule(step) * terms["commitment"]
        return ObjectiveValue(loss, terms)
