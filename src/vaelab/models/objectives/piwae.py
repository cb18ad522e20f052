"""The partially importance-weighted autoencoder's objective: the decoder on the IWAE bound, the encoder on MIWAE's.

Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh (2018), *Tighter Variational Bounds are Not Necessarily Better*,
ICML.
"""

from __future__ import annotations

import math

import torch
from torch.func import functional_call

from vaelab.errors import ConfigError
from vaelab.models.objectives.base import Objective, ObjectiveValue
from vaelab.models.objectives.miwae import check_draws, grouped_bound


def log_weights_of_draws(model, x: torch.Tensor, z: torch.Tensor, log_ratio: torch.Tensor, decode) -> torch.Tensor:
    """log w = log p(x | z) + log p(z) − log q(z | x) of given draws ``z`` ``(n, B, D)`` with their
    log p(z) − log q(z|x) ``(n, B)``, decoded by ``decode`` (the decoder, or the decoder with other weights); ``(n,
    B)``, as :func:`vaelab.models.importance.log_importance_weights` (Burda et al. 2016, eq. 8)."""
    n, batch = z.shape[:2]
    output = decode(z.reshape(n * batch, *z.shape[2:]))
    log_px_z = -model.likelihood.nll_samples(output.reshape(n, batch, *output.shape[1:]), x)
    return log_px_z.to(log_ratio.dtype) + log_ratio


def frozen_decoder(model):
    """The model's decoder as a function of z whose weights are detached: gradients reach z (and through it the
    encoder) but not the decoder's parameters."""
    weights = {name: p.detach() for name, p in model.decoder.named_parameters()}
    return lambda z: functional_call(model.decoder, weights, (z,))


class PIWAE(Objective):
    """The decoder's gradient is that of −L_{M·K}, the IWAE bound over all M·K draws, and the encoder's that of
    −(1/M) Σ_m L_K^{(m)}, MIWAE's (Rainforth et al. 2018, sec. 5 and Algorithm 1), from the same M·K draws
    z_{m,k} ~ q(z|x), batch mean.

    The two gradients come from one backward pass of ``L_dec + (L_enc − sg[L_enc])`` (sg: stop-gradient), where
    L_dec = −L_{M·K} is computed from the draws and log p(z) − log q(z|x) detached (its gradient reaches only the
    decoder) and L_enc = −MIWAE(M, K) is computed with the decoder's weights detached
    (``torch.func.functional_call``: its gradient flows through z to the encoder only). So ``loss`` holds the value
    of −L_{M·K}, the negative of a bound on log p(x), while its gradient is PIWAE's. K = 1 trains the encoder on
    the M·K-draw ELBO; M = 1 is IWAE(K).

    Logged: ``iw_bound`` (L_{M·K}, the decoder's target, −loss) and ``miwae_bound`` (the encoder's target). The
    decoder is run twice over the M·K·B codes (once with live weights, once detached).

    Needs a code and prior without parameters of their own (``model.code=gaussian``, no ``model.prior``): which
    side a learned prior's parameters would train on is not what this split decides.

    Args:
        m: M, the number of independent groups of the encoder's bound (``model.objective.m``).
        k: K, the draws in each group (``model.objective.k``); the decoder's bound uses all M·K.
    """

    term_names = ("iw_bound", "miwae_bound")
    beta_name = None

    def __init__(self, m: int = 8, k: int = 8, schedule=None) -> None:
        super().__init__(schedule)
        check_draws(m, k)
        self.m, self.k = int(m), int(k)

    def forward(self, model, x, out, step) -> ObjectiveValue:
        if getattr(model, "prior", None) is not None or any(True for _ in model.code.parameters()):
            raise ConfigError("PIWAE splits the gradients between the encoder and the decoder and needs a code and "
                              "prior without parameters of their own: use model.code=gaussian and no model.prior")
        n = self.m * self.k
        z, log_ratio = model.latent_draws(out.features, n)
        # the decoder's bound: the draws as data (no gradient to the encoder)
        log_w_dec = log_weights_of_draws(model, x, z.detach(), log_ratio.detach(), model.decode)
        iw_bound = (torch.logsumexp(log_w_dec, dim=0) - math.log(n)).mean()
        # the encoder's bound: the same draws through the decoder's detached weights
        log_w_enc = log_weights_of_draws(model, x, z, log_ratio, frozen_decoder(model))
        miwae_bound = grouped_bound(log_w_enc, self.m, self.k).mean()
        loss = -iw_bound + (-miwae_bound - (-miwae_bound).detach())
        return ObjectiveValue(loss, {"iw_bound": iw_bound.detach(), "miwae_bound": miwae_bound.detach()})

    def weights(self, step: int) -> dict[str, float]:
        return {}

    def schedules(self) -> list:
        return []
