"""The regularised deterministic autoencoder (RAE): a point code kept small, a decoder kept smooth.

Ghosh, Sajjadi, Vergari, Black & Schölkopf (2020), *From Variational to Deterministic Autoencoders*, ICLR, sec. 3.
A Gaussian VAE's sampled code is a deterministic code plus noise injected into the decoder's input; the RAE drops
the noise and regularises the decoder explicitly instead (eq. 11),

    L_RAE = L_REC + β · L_Z + λ · L_REG,     L_Z = ½ ‖z‖²₂,

with L_REG one of (sec. 3): RAE-L2, Tikhonov regularisation of the decoder, L_L2 = ‖θ_dec‖²₂ (weight decay of the
decoder alone); RAE-GP, a gradient penalty that keeps the decoder smooth around the codes it is used at,
L_GP = ‖∇_z D_θ(z)‖²₂ at z = enc(x). L_Z bounds the code, which would otherwise grow to defeat the decoder's
penalty. There is no prior: images are generated from a density fitted on the training codes afterwards
(sec. 4, ``sampler=gmm``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import jacfwd, vmap

from vaelab.errors import ConfigError
from vaelab.models.objectives.base import Objective, ObjectiveValue

#: model.objective.regulariser's values: the decoder's weight penalty, or the gradient penalty
REGULARISERS = ("l2", "gp")


def code_penalty(z: torch.Tensor) -> torch.Tensor:
    """L_Z = ½ ‖z‖²₂ of every code (Ghosh et al. 2020, sec. 3): shape ``(B,)``, summed over the code's dimensions."""
    return 0.5 * z.flatten(1).pow(2).sum(dim=1)


def decoder_weight_penalty(decoder: nn.Module) -> torch.Tensor:
    """L_L2 = ‖θ_dec‖²₂ (Ghosh et al. 2020, sec. 3, RAE-L2): the sum of the squares of the decoder's weights, its
    linear layers' matrices and its convolutions' kernels (every parameter of two or more dimensions). Biases and a
    normalisation's scales are left out, as weight decay usually leaves them (the authors' implementation penalises
    the kernels only). One number for the batch: it depends on the weights, not on the images."""
    weights = [p for p in decoder.parameters() if p.dim() >= 2]
    if not weights:
        raise ValueError("RAE-L2: the decoder has no weight matrix or kernel to penalise")
    return torch.stack([w.pow(2).sum() for w in weights]).sum()


def decoder_jacobian(model, z: torch.Tensor) -> torch.Tensor:
    """J(z) = ∂D(z)/∂z of the decoded image D(z) (the likelihood's mean of the decoder's output: the image the
    paper's decoder outputs) with respect to each code of the batch, exactly (forward-mode automatic
    differentiation, ``torch.func``: one pass per code dimension): shape ``(B, *image_shape, d)``. Differentiable,
    so a loss may hold it."""

    def image_of_one(code: torch.Tensor) -> torch.Tensor:
        return model.mean(model.decode(code.unsqueeze(0))).squeeze(0)

    return vmap(jacfwd(image_of_one))(z)


def gradient_penalty(model, z: torch.Tensor) -> torch.Tensor:
    """L_GP = ‖∇_z D(z)‖²₂ of every code (Ghosh et al. 2020, sec. 3, RAE-GP), read as the squared Frobenius norm
    Σ_ij (∂D_i/∂z_j)² of the decoder's Jacobian over every pixel i and code dimension j: shape ``(B,)``."""
    return decoder_jacobian(model, z).pow(2).flatten(1).sum(dim=1)


def _weight(key: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"model.objective.{key} = {value!r} is invalid: it must be a finite number >= 0, "
                          "e.g. 1.0e-7")
    return float(value)


class RegularisedAutoencoder(Objective):
    """loss = recon + β(step) · ½‖z‖²₂ + λ · L_REG, z = enc(x) a point code, per image, batch mean (Ghosh et al.
    2020, eq. 11); L_REG is ‖θ_dec‖²₂ (``regulariser: l2``, RAE-L2) or ‖∇_z D(z)‖²₂ (``regulariser: gp``, RAE-GP).

    β is the model's β schedule (``model.beta``, the paper's β); λ is ``lambda_reg``. The weight penalty is one
    number per batch, added once to the batch-mean loss (it is the same for every image); the gradient penalty is
    per image, averaged over the batch like the other terms. Gradients of the gradient penalty reach the decoder
    (its smoothness) and the encoder (where the decoder is evaluated).

    Logged terms: ``code_penalty`` (the batch mean of ½‖z‖²), and ``decoder_l2`` (‖θ_dec‖²) or
    ``gradient_penalty`` (the batch mean of ‖∇_z D(z)‖²), after the regulariser in use.

    Args:
        regulariser: ``l2`` or ``gp``.
        lambda_reg: λ, the weight of the decoder's regulariser.
    """

    needs_posterior = False

    def __init__(self, regulariser: str = "l2", lambda_reg: float = 1e-7, schedule=None) -> None:
        super().__init__(schedule)
        if regulariser not in REGULARISERS:
            raise ConfigError(f"model.objective.regulariser = {regulariser!r} is invalid: it must be one of "
                              f"{', '.join(REGULARISERS)} (the decoder's weight penalty, or the gradient penalty)")
        self.regulariser = regulariser
        self.lambda_reg = _weight("lambda_reg", lambda_reg)
        #: the terms logged: the code's penalty and the regulariser's, under a name of its own
        self.term_names = ("code_penalty", "decoder_l2" if regulariser == "l2" else "gradient_penalty")

    def regularisation(self, model, z: torch.Tensor) -> torch.Tensor:
        """L_REG of the batch: ‖θ_dec‖²₂ (a scalar), or the batch mean of ‖∇_z D(z)‖²₂."""
        if self.regulariser == "l2":
            return decoder_weight_penalty(model.decoder)
        if torch.is_inference_mode_enabled():  # validation and testing: the value, outside inference mode
            with torch.inference_mode(False):
                return gradient_penalty(model, z.clone()).mean().detach()
        return gradient_penalty(model, z).mean()

    def forward(self, model, x, out, step) -> ObjectiveValue:
        codes = code_penalty(out.z).mean()
        regularisation = self.regularisation(model, out.z)
        loss = out.recon.mean() + self.schedule(step) * codes + self.lambda_reg * regularisation
        return ObjectiveValue(loss, {"code_penalty": codes, self.term_names[1]: regularisation})
