"""Decoder likelihoods p(x | z): the reconstruction term of every objective.

``nll`` returns one value per image (shape ``(batch,)``): a sum over pixels, in nats. Images x are 8-bit values
k/255 in [0, 1] (:meth:`vaelab.data.base.ImageDataModule.to_float`).

* ``bernoulli``: the decoder outputs logits (binary pixels).
* ``gaussian``: the decoder outputs means; a fixed σ (``model.likelihood_std``).
* ``gaussian_per_pixel``: the decoder outputs means and log-variances, one σ per pixel and image.
* ``gaussian_shared``: the decoder outputs means; one σ for every pixel, a learned parameter of the likelihood
  (in the model's ``state_dict`` as ``likelihood.raw_log_std``, started at σ = ``model.likelihood_std``).
* ``discretized_logistic``: the discretised mixture of logistics of Salimans et al. (2017), a probability mass
  function over the 256 values of each 8-bit channel (:class:`DiscretizedLogisticMixture`).

A likelihood is an ``nn.Module`` (the learned σ is a parameter of it, so it trains, moves and checkpoints with the
model). It says how many channels the decoder must output for images of C channels (:meth:`Likelihood.output_channels`)
and whether ``nll`` is of a density on [0, 1] (``continuous``: bits per dimension then add log 256 per dimension,
:func:`vaelab.metrics.likelihood.bits_per_dim`) or of a mass function over the pixel values.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vaelab.models.distributions import LOG_2PI
from vaelab.rules import LIKELIHOODS


def bernoulli_nll_broadcast(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The Bernoulli reconstruction error of ``x`` ``(B, …)`` under each of several decoder outputs ``(n, B, …)``:
    shape ``(n, B)``, without repeating ``x`` n times.

    J = Σᵢ [softplus(lᵢ) − xᵢ lᵢ], the same value as :func:`bernoulli_nll` (x log σ(l) + (1 − x) log(1 − σ(l)) =
    x l − softplus(l) for any x in [0, 1]), in two passes over the logits: what the importance-weighted bound's K
    decodes per image cost besides their matrix products.
    """
    dims = tuple(range(2, logits.dim()))
    return F.softplus(logits).sum(dim=dims) - (logits * x.unsqueeze(0)).sum(dim=dims)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bernoulli reconstruction error J = −Σᵢ [xᵢ log yᵢ + (1 − xᵢ) log(1 − yᵢ)] with y = sigmoid(logits).

    Computed from the logits (log-sum-exp form of binary cross-entropy), so it stays finite where y would
    round to 0 or 1. ``x`` may be any intensity in [0, 1], as in the classic PyTorch VAE example; only for binary x
    is it a log-likelihood (see :func:`vaelab.metrics.likelihood.comparability_notes`).
    """
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(dim=1)


def gaussian_nll(mean: torch.Tensor, x: torch.Tensor, std: float) -> torch.Tensor:
    """Negative log-likelihood of x under N(mean, std² I), in nats, constant included:

    Σᵢ [ (xᵢ − meanᵢ)² / (2 std²) + log std + ½ log 2π ].
    """
    per_pixel = 0.5 * ((x - mean) / std).pow(2) + math.log(std) + 0.5 * LOG_2PI
    return per_pixel.flatten(1).sum(dim=1)


class Likelihood(nn.Module):
    """A decoder likelihood p(x | z): turns the decoder's raw output into an NLL and a mean image."""

    name: str = ""
    #: whether ``nll`` is −log of a density on [0, 1] (True) or of a mass function over the pixel values (False)
    continuous: bool = False

    def output_channels(self, channels: int) -> int:
        """How many channels the decoder outputs for images of ``channels`` channels (the same, by default)."""
        return int(channels)

    def nll(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def nll_samples(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """−log p(x | z_k) of images ``x`` ``(B, …)`` for decoder outputs of n codes per image ``(n, B, …)``: shape
        ``(n, B)`` (x is broadcast, not copied)."""
        n, batch = output.shape[:2]
        return self.nll(output.flatten(0, 1), x.unsqueeze(0).expand(n, *x.shape).flatten(0, 1)).reshape(n, batch)

    def mean(self, output: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class BernoulliLikelihood(Likelihood):
    """The decoder outputs logits; the image is the Bernoulli mean sigmoid(logits)."""

    name = "bernoulli"

    def nll(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return bernoulli_nll(output, x)

    def nll_samples(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return bernoulli_nll_broadcast(output, x)

    def mean(self, output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(output)


class GaussianLikelihood(Likelihood):
    """The decoder outputs the mean of N(mean, std² I) with a fixed std."""

    name = "gaussian"
    continuous = True

    def __init__(self, std: float) -> None:
        super().__init__()
        if not std > 0:
            raise ValueError(f"the Gaussian likelihood needs std > 0, got {std}")
        self.std = float(std)

    def nll(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return gaussian_nll(output, x, self.std)

    def mean(self, output: torch.Tensor) -> torch.Tensor:
        return output


#: the floor of a learned-variance Gaussian's σ: its density then never exceeds 256, the height of the uniform
#: density over one 8-bit bin of width 1/256 (1 / (σ √(2π)) ≤ 256), so a learned σ cannot shrink onto exact pixel
#: values (a black background) and send −log p(x|z), and the 8-bit bits/dim, below 0
MIN_STD = 1.0 / (256.0 * math.sqrt(2.0 * math.pi))
_MIN_LOG_STD = math.log(MIN_STD)


def floored_log_std(raw: torch.Tensor) -> torch.Tensor:
    """log σ from an unconstrained ``raw`` value: log σ = m + softplus(raw − m), m = log :data:`MIN_STD`.

    σ > MIN_STD always, log σ ≈ raw once raw is a few units above m, and the gradient never vanishes (a hard clamp
    would leave a σ that once fell below the floor there for good)."""
    return _MIN_LOG_STD + F.softplus(raw - _MIN_LOG_STD)


def raw_for_std(std: float) -> float:
    """The ``raw`` value that :func:`floored_log_std` maps to log ``std`` (``std`` > :data:`MIN_STD`)."""
    return _MIN_LOG_STD + math.log(math.expm1(math.log(std) - _MIN_LOG_STD))


def gaussian_nll_log_std(mean: torch.Tensor, x: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of x under N(mean, σ²) with log σ given (per pixel, or broadcast), per image, in nats:

    Σᵢ [ (xᵢ − meanᵢ)² / (2 σᵢ²) + log σᵢ + ½ log 2π ].
    """
    per_pixel = 0.5 * ((x - mean) * torch.exp(-log_std)).pow(2) + log_std + 0.5 * LOG_2PI
    return per_pixel.flatten(1).sum(dim=1)


class GaussianPerPixelLikelihood(Likelihood):
    """A Gaussian with a learned variance per pixel: the decoder outputs 2C channels, the means and then the
    log-variances v of the C image channels (as the Gaussian decoder of Kingma & Welling 2014, app. C.2), with
    σ floored softly at :data:`MIN_STD`: log σ = :func:`floored_log_std` (v / 2)."""

    name = "gaussian_per_pixel"
    continuous = True

    def output_channels(self, channels: int) -> int:
        return 2 * int(channels)

    @staticmethod
    def split(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder output ``(B, 2C, …)`` as the means and log σ ``(B, C, …)`` each."""
        mean, log_var = output.chunk(2, dim=1)
        return mean, floored_log_std(0.5 * log_var)

    def nll(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mean, log_std = self.split(output)
        return gaussian_nll_log_std(mean, x, log_std)

    def mean(self, output: torch.Tensor) -> torch.Tensor:
        return output.chunk(2, dim=1)[0]


class GaussianSharedLikelihood(Likelihood):
    """A Gaussian with one learned σ for every pixel: the decoder outputs the means; log σ =
    :func:`floored_log_std` (``raw_log_std``), a parameter of the likelihood started at σ = ``std``. Given the
    decoder, the maximum-likelihood σ² is the mean squared error per pixel, which σ follows as it trains (the
    learned γ of Dai & Wipf 2019, sec. 4)."""

    name = "gaussian_shared"
    continuous = True

    def __init__(self, std: float) -> None:
        super().__init__()
        if isinstance(std, bool) or not (isinstance(std, (int, float)) and math.isfinite(std) and std > MIN_STD):
            raise ValueError(f"model.likelihood_std = {std} is invalid: the gaussian_shared likelihood starts its "
                             f"learned σ there, which must be a finite number > {MIN_STD:.3g} (its floor), e.g. 0.1")
        self.raw_log_std = nn.Parameter(torch.tensor(raw_for_std(float(std))))

    @property
    def log_std(self) -> torch.Tensor:
        """The current log σ (a scalar tensor, with its gradient)."""
        return floored_log_std(self.raw_log_std)

    @property
    def std(self) -> float:
        """The current σ."""
        return float(self.log_std.detach().exp())

    def nll(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return gaussian_nll_log_std(output, x, self.log_std)

    def mean(self, output: torch.Tensor) -> torch.Tensor:
        return output


#: the mixture components of ``discretized_logistic`` (PixelCNN++ uses 10 on CIFAR-10; fewer suit small images)
LOGISTIC_COMPONENTS = 5
#: PixelCNN++'s floor on the log-scales (in its released code)
MIN_LOG_SCALE = -7.0
#: below this probability of a bin, its log-probability is taken at the bin's centre (the mid-point fallback)
MIN_BIN_PROBABILITY = 1e-5
_HALF_BIN = 0.5 / 255  # pixel values are k/255: bin k is [k/255 − ½/255, k/255 + ½/255]


def discretized_logistic_log_prob(x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) of 8-bit values x = k/255 under a logistic of location ``loc`` and scale e^``log_scale`` discretised to
    the 256 bins of width 1/255 (Salimans et al. 2017, eq. 2 and sec. 2.1), elementwise:

        P(x) = σ((x + ½/255 − μ)/s) − σ((x − ½/255 − μ)/s)      for 0 < x < 1,
        P(0) = σ((½/255 − μ)/s)                                 (the lowest bin reaches −∞),
        P(1) = 1 − σ((1 − ½/255 − μ)/s)                         (the highest bin reaches +∞),

    so the 256 probabilities sum to 1. Where a middle bin's probability falls below :data:`MIN_BIN_PROBABILITY`
    (in float32 the difference of two sigmoids then loses its digits) its log is the mid-point approximation
    log[(1/255) · logistic density at x], as in the paper's code. log s is floored at :data:`MIN_LOG_SCALE`.
    """
    log_scale = log_scale.clamp(min=MIN_LOG_SCALE)
    inv_scale = torch.exp(-log_scale)
    centred = x - loc
    plus_in = inv_scale * (centred + _HALF_BIN)
    min_in = inv_scale * (centred - _HALF_BIN)
    log_cdf_plus = plus_in - F.softplus(plus_in)  # log σ(plus_in): the lowest bin
    log_one_minus_cdf_min = -F.softplus(min_in)  # log (1 − σ(min_in)): the highest bin
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    mid_in = inv_scale * centred
    log_pdf_mid = mid_in - log_scale - 2.0 * F.softplus(mid_in)  # log of the logistic density at x
    middle = torch.where(cdf_delta > MIN_BIN_PROBABILITY, torch.log(cdf_delta.clamp(min=1e-12)),
                         log_pdf_mid - math.log(255.0))
    low, high = x < _HALF_BIN, x > 1.0 - _HALF_BIN
    return torch.where(low, log_cdf_plus, torch.where(high, log_one_minus_cdf_min, middle))


class DiscretizedLogisticMixture(Likelihood):
    """The discretised mixture of logistics of Salimans et al. (2017, PixelCNN++), eq. 2 and sec. 2.1, factorised
    over channels: per pixel, one mixture over K components shared by the C channels,

        P(x) = Σ_k π_k Π_c P_logistic(x_c | μ_kc, s_kc)           (:func:`discretized_logistic_log_prob`),

    without the paper's linear coupling of a channel's mean to the channels before it (sec. 2.2): given the
    component, the channels are independent; the shared component still correlates them (a component is one
    colour). A mass function over the 256 values of each channel, so −log P(x|z) / (D ln 2) is bits/dim as it is.

    The decoder outputs K(1 + 2C) channels: the K mixture logits, then K·C locations (x's scale, [0, 1]), then K·C
    log-scales, each block component-major (component k's C channels together).
    """

    name = "discretized_logistic"

    def __init__(self, components: int = LOGISTIC_COMPONENTS) -> None:
        super().__init__()
        if isinstance(components, bool) or int(components) != components or components < 1:
            raise ValueError(f"the discretized_logistic likelihood needs an integer number of components >= 1, got "
                             f"{components}")
        self.components = int(components)

    def output_channels(self, channels: int) -> int:
        return self.components * (1 + 2 * int(channels))

    def split(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decoder output ``(B, K(1 + 2C), H, W)`` as the mixture logits ``(B, K, H, W)``, the locations and the
        log-scales ``(B, K, C, H, W)`` each."""
        k = self.components
        channels, rest = divmod(output.shape[1] - k, 2 * k)
        if rest or channels < 1:
            raise ValueError(f"a {k}-component discretized_logistic likelihood needs K(1 + 2C) output channels, got "
                             f"{output.shape[1]}")
        logits, loc, log_scale = output.split([k, k * channels, k * channels], dim=1)
        shape = (output.shape[0], k, channels, *output.shape[2:])
        return logits, loc.reshape(shape), log_scale.reshape(shape)

    def log_prob(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log P(x | z) per pixel, ``(B, H, W)``: the mixture over components of the channels' product."""
        logits, loc, log_scale = self.split(output)
        per_channel = discretized_logistic_log_prob(x.unsqueeze(1), loc, log_scale)  # (B, K, C, H, W)
        return torch.logsumexp(F.log_softmax(logits, dim=1) + per_channel.sum(dim=2), dim=1)

    def nll(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -self.log_prob(output, x).flatten(1).sum(dim=1)

    def mean(self, output: torch.Tensor) -> torch.Tensor:
        """The image: the mixture's mean of the components' locations, Σ_k π_k μ_kc, clamped to [0, 1] (the
        discretised mean differs where a component's mass is cut at 0 or 1)."""
        logits, loc, _ = self.split(output)
        return (torch.softmax(logits, dim=1).unsqueeze(2) * loc).sum(dim=1).clamp(0.0, 1.0)


def make_likelihood(name: str, std: float = 0.1) -> Likelihood:
    """Build the likelihood named ``name`` (one of :data:`vaelab.rules.LIKELIHOODS`); ``std`` is the fixed σ of
    ``gaussian`` and the starting σ of ``gaussian_shared``."""
    if name == "bernoulli":
        return BernoulliLikelihood()
    if name == "gaussian":
        return GaussianLikelihood(std)
    if name == "gaussian_per_pixel":
        return GaussianPerPixelLikelihood()
    if name == "gaussian_shared":
        return GaussianSharedLikelihood(std)
    if name == "discretized_logistic":
        return DiscretizedLogisticMixture()
    raise ValueError(f"unknown likelihood {name!r}: choose one of {', '.join(LIKELIHOODS)}")
