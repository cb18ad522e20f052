"""An inverse autoregressive flow posterior (Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling 2016,
*Improved Variational Inference with Inverse Autoregressive Flow*, NeurIPS, sec. 4, eq. 10–14 and Algorithm 1).

The encoder gives μ, log σ² and a context vector c; z_0 = μ + σ ⊙ ε with ε ~ N(0, I), then T steps

    [m_t, s_t] = MADE_t(z_{t−1}, c),   σ_t = sigmoid(s_t),   z_t = σ_t ⊙ z_{t−1} + (1 − σ_t) ⊙ m_t

with the variables' autoregressive order reversed from one step to the next (the paper's numerically stable,
LSTM-like form of the step). Each step's Jacobian is triangular with diagonal σ_t, so

    log q(z_T | x) = log N(z_0; μ, σ²) − Σ_t Σ_i log σ_{t,i}.

The MADE (Germain et al. 2015) and the autoregressive wiring are zuko's ``MaskedAutoregressiveTransform``, with the
gated update above as its element-wise transform (:class:`GatedUpdate`). Which direction is one pass: the MADE reads
the transform's INPUT, so the forward call z_{t−1} ↦ z_t is a single network pass, and its inverse needs one pass
per dimension. That forward direction is the one the IAF needs (draw z_0, flow it to z_T and know log q(z_T|x)
at once); zuko's MAF (Papamakarios et al. 2017) uses the same call the other way round, as data ↦ noise for a density.
The inverse is never used here, so q(z|x) can be evaluated only at its own draws (no VampPrior on this code).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Transform, constraints
from zuko.flows.autoregressive import MaskedAutoregressiveTransform

from vaelab.errors import ConfigError
from vaelab.models.codes import Code, CodeOutput
from vaelab.models.distributions import gaussian_draws, standard_normal_log_prob

#: the initial bias of every gate pre-activation s_t: σ_t ≈ sigmoid(2) = 0.88 before training, so each step moves
#: z only a little at first (Kingma et al. 2016, sec. 4: s_t "sufficiently positive, such as close to +1 or +2")
GATE_BIAS = 2.0


class GatedUpdate(Transform):
    """The IAF's element-wise step (Kingma et al. 2016, sec. 4): y = σ ⊙ x + (1 − σ) ⊙ m, σ = sigmoid(s), whose
    log-derivative is log σ (computed as logsigmoid(s), finite for any s)."""

    domain = constraints.real
    codomain = constraints.real
    bijective = True
    sign = +1

    def __init__(self, shift: torch.Tensor, gate: torch.Tensor, **kwargs) -> None:
        super().__init__(**kwargs)
        self.shift, self.gate = shift, gate

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        sigma = torch.sigmoid(self.gate)
        return sigma * x + (1 - sigma) * self.shift

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        sigma = torch.sigmoid(self.gate)
        return (y - (1 - sigma) * self.shift) / sigma

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.logsigmoid(self.gate).expand(x.shape)


def check_int(key: str, value: object, minimum: int, what: str) -> int:
    """An integer setting, refused unless ≥ ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} = {value!r} is invalid: it must be an integer >= {minimum} ({what})")
    return value


def check_hidden(key: str, value: object) -> tuple[int, ...]:
    """The MADE's hidden layer widths, refused unless a non-empty list of integers ≥ 1."""
    sizes = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if not sizes or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes):
        raise ConfigError(f"{key} = {value!r} is invalid: it must be a non-empty list of layer widths, each an "
                          "integer >= 1, e.g. [320, 320]")
    return sizes


class IAFCode(Code):
    """q(z|x): a diagonal Gaussian z_0 flowed through T inverse autoregressive steps, p(z) = N(0, I)
    (Kingma et al. 2016; see the module's docstring for the equations).

    The encoder gives ``2 · latent_dim + context_dim`` features: μ, log σ² and the context c that every MADE reads
    besides z_{t−1}. The pass draws one z_T and its exact log q(z_T|x); the KL is the one-sample estimate
    log q(z_T|x) − log N(z_T; 0, I) (no closed form), ``CodeOutput.log_q`` holds log q.

    The deterministic code (``mu``, what ``encode``/``embed``/``reconstruct`` use) is the flow applied to μ, i.e.
    to ε = 0: a point in z_T's space, where the decoder reads, but neither the mean nor the mode of q(z_T|x).
    ``logvar`` is log σ² of z_0, the Gaussian before the flow: the width of the noise the flow starts from, not the
    variance of z_T, so a per-dimension closed-form KL computed from (``mu``, ``logvar``) is only a proxy for it.

    Args:
        steps: T, the number of IAF steps (``model.code.steps``), ≥ 0; 0 is the VAE's diagonal Gaussian (with a
            one-sample KL).
        hidden_dims: the widths of each MADE's hidden layers (``model.code.hidden_dims``), ReLU between them.
        context_dim: the size of the context c (``model.code.context_dim``), ≥ 0 (0: the MADEs read z alone).
    """

    variational = True
    has_prior = True
    has_kl = True

    def __init__(self, steps: int = 2, hidden_dims: Sequence[int] = (320, 320), context_dim: int = 16) -> None:
        super().__init__()
        # checked by build, so that a bad value reaches the user as itself, not wrapped by Hydra's instantiation
        self.num_steps, self.hidden_dims, self.context_dim = steps, hidden_dims, context_dim
        self.latent_dim = 0

    def build(self, latent_dim: int) -> None:
        """Check the settings and make the T MADEs, the order reversed at every other step, each gate's bias
        :data:`GATE_BIAS`."""
        steps = check_int("model.code.steps", self.num_steps, 0, "the number of IAF steps; 0 is the plain "
                                                                     "diagonal Gaussian")
        self.context_dim = check_int("model.code.context_dim", self.context_dim, 0, "the size of the context "
                                                                                    "vector; 0 for none")
        hidden = check_hidden("model.code.hidden_dims", self.hidden_dims)
        if latent_dim < 2:
            raise ConfigError(f"model.latent_dim = {latent_dim} is invalid with model.code=iaf: an autoregressive "
                              "flow needs a code of at least 2 dimensions (model.code=gaussian for 1)")
        self.latent_dim = latent_dim
        order = torch.arange(latent_dim)
        self.flow = nn.ModuleList(
            MaskedAutoregressiveTransform(latent_dim, self.context_dim, order=order if t % 2 == 0 else order.flip(0),
                                          univariate=GatedUpdate, hidden_features=hidden)
            for t in range(steps)
        )
        with torch.no_grad():
            for step in self.flow:
                step.hyper[-1].bias[1::2] += GATE_BIAS  # the outputs are (m_i, s_i) per dimension i

    def encoder_features(self, latent_dim: int) -> int:
        return 2 * latent_dim + self.context_dim

    # ------------------------------------------------------------------ the flow
    def split(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """μ, log σ² of z_0 and the context c (None without one), from the encoder's features ``h``."""
        d = self.latent_dim
        return h[:, :d], h[:, d : 2 * d], (h[:, 2 * d :] if self.context_dim else None)

    def transform(self, z: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """z_T and Σ_t Σ_i log σ_{t,i} for z_0 = ``z`` (``(..., B, D)``, the context ``(B, C)``): one MADE pass a
        step."""
        total = z.new_zeros(z.shape[:-1])
        for step in self.flow:
            z, ladj = step(context).call_and_ladj(z)
            total = total + ladj
        return z, total

    def draw(self, h: torch.Tensor, n: int,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` draws z_T ~ q(z|x) per image, ``(n, B, D)``, and log q(z_T|x) = log N(z_0; μ, σ²) − Σ log σ_t of
        each, ``(n, B)``."""
        mu, logvar, context = self.split(h)
        z0, log_q0 = gaussian_draws(mu, logvar, n, generator)
        z, log_det = self.transform(z0, None if context is None else context.to(z0.dtype))
        return z, log_q0 - log_det

    def locate(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The flow applied to μ (ε = 0), and log σ² of z_0."""
        mu, logvar, context = self.split(h)
        return self.transform(mu, context)[0], logvar

    def forward(self, h: torch.Tensor) -> CodeOutput:
        z, log_q = (t.squeeze(0) for t in self.draw(h, 1))
        mu, logvar = self.locate(h)
        return CodeOutput(z=z, mu=mu, logvar=logvar, kl=log_q - standard_normal_log_prob(z), log_q=log_q)

    # ------------------------------------------------------------------ the prior N(0, I)
    def prior_sample(self, n: int, latent_dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, latent_dim, generator=generator, device="cpu")

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return standard_normal_log_prob(z)

