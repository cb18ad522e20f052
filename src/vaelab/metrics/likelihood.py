"""Estimators over a data set for a trained autoencoder: the ELBO, the importance-weighted bound, bits per dimension.

Everything here is plain torch and works on any model with the interface of
:class:`vaelab.training.AutoencoderModule`: ``encode(x) -> (μ, log σ² or None)``, ``decode(z) -> raw output``,
``likelihood`` (with ``.nll(output, x)`` per image in nats and ``.mean(output)``), ``variational`` and
``latent_dim``; :func:`evaluate` also calls ``model(x)`` for an :class:`~vaelab.models.AutoencoderOutput` and reads
``model.code.has_kl``.

All values are per image and in nats unless a name says bits.

References:
    Burda, Grosse & Salakhutdinov (2016), *Importance Weighted Autoencoders*, ICLR.
    Kingma & Welling (2014), *Auto-Encoding Variational Bayes*, ICLR.
    Theis, van den Oord & Bethge (2016), *A note on the evaluation of generative models*, ICLR (sec. 3.1).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from vaelab.metrics.active_units import ActiveUnits
from vaelab.models import importance

__all__ = ["bits_per_dim", "comparability_notes", "evaluate", "importance_weighted_bound"]


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Eval mode and no gradients for the duration; the previous train/eval mode is restored afterwards."""
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.train(False)
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train(True)


def importance_weighted_bound(
    model: Any,
    x: torch.Tensor,
    k: int,
    chunk_size: int | None = None,
    *,
    generator: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """The importance-weighted lower bound L_K on log p(x), one K-sample estimate per image (shape ``(B,)``)
    (on log p(x | y) for a conditional model, given the images' class ``labels``).

    Burda et al. (2016), eq. 8: L_K = E_{z_1..z_K ~ q(z|x)} [ log (1/K) Σ_k p(x, z_k) / q(z_k | x) ], estimated with
    a single draw of K samples (:func:`vaelab.models.importance.importance_weighted_bound`, which IWAE training
    shares). A single estimate of L_K is unbiased for L_K, not for log p(x). The image is encoded once; the samples
    are decoded ``chunk_size`` at a time (each chunk holds ``chunk_size·B`` decoder outputs), which bounds memory
    for large K such as the paper's K = 5000.

    Runs without gradients and in eval mode (an ``nn.Module``'s previous mode is restored).

    Args:
        model: a variational model with ``features``, ``latent_draws``, ``decode`` and ``likelihood``.
        x: a batch of images ``(B, ...)`` on the model's device.
        k: the number of importance samples K ≥ 1.
        chunk_size: decode at most this many samples (each a full batch) at a time; None decodes all K at
            once.
        generator: an optional ``torch.Generator`` (on x's device) for the ε draws.

    Raises:
        ValueError: for a deterministic autoencoder (it has no posterior, so no likelihood bound), or for
            ``k < 1`` / ``chunk_size < 1``.
    """
    if not getattr(model, "variational", True):
        raise ValueError("importance_weighted_bound needs a variational model: an autoencoder has no q(z|x)")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    with _eval_mode(model):
        given = {} if labels is None else {"labels": labels}
        return importance.importance_weighted_bound(model, x, model.features(x, **given), k, chunk_size, generator,
                                                    labels)


#: the values an 8-bit pixel takes: a density on [0, 1] becomes a probability per value by the width 1/256 of its bin
PIXEL_LEVELS = 256


def bits_per_dim(nats_per_image: float | torch.Tensor, num_dims: int,
                 dequantise: bool = False) -> float | torch.Tensor:
    """Convert a negative log-likelihood (bound) in nats per image to bits per dimension.

    ``num_dims`` is D, the number of values per image (channels × height × width). For −log of a probability mass
    function over the pixel values (Bernoulli, the discretised logistic) it is a unit conversion: nats / (D ln 2).
    For −log of a density on x in [0, 1] (a Gaussian), ``dequantise=True`` makes it an 8-bit figure: a density p
    gives each of the 256 values the probability p/256 of its bin of width 1/256 (uniform dequantisation, Theis et
    al. 2016, sec. 3.1), so (nats + D log 256) / (D ln 2), exactly 8 more bits per dimension.
    """
    if int(num_dims) < 1:
        raise ValueError(f"num_dims must be >= 1, got {num_dims}")
    offset = int(num_dims) * math.log(PIXEL_LEVELS) if dequantise else 0.0
    return (nats_per_image + offset) / (int(num_dims) * math.log(2.0))


def comparability_notes(likelihood: str, binarize: str, binary_images: bool = False) -> list[str]:
    """What a reader must know before putting this run's −ELBO, −L_K or bits/dim next to published log-likelihoods.

    * Bernoulli on grey levels (``binarize=none`` of a data set whose images are not ``binary_images`` already, as
      ``data=shapes``' are): a cross-entropy, not a normalised likelihood;
    * Gaussian (``gaussian``, ``gaussian_per_pixel``, ``gaussian_shared``): a density on 8-bit pixels, evaluated at
      the pixel values without dequantisation noise: its bits/dim adds log 256 per dimension but is not a bound;
    * ``discretized_logistic``: nothing: a mass function over the 256 values of each channel;
    * Bernoulli on ``binarize=static``: one Bernoulli draw of the data set, made here, which is not the fixed
      binarised-MNIST file of Larochelle & Murray (2011) that part of the literature reports on;
    * Bernoulli on ``binarize=dynamic``: nothing: the protocol of Burda et al. (2016) and most later work (fresh
      draws for training, one fixed draw of the test images).

    ``likelihood`` is ``model.likelihood``, ``binarize`` is ``data.binarize``, ``binary_images`` the DataModule's
    own ``binary_images``.
    """
    if likelihood == "discretized_logistic":
        return []
    if likelihood.startswith("gaussian"):
        return ["A Gaussian density on 8-bit pixels: -ELBO and -L_K are in nats of a density on [0, 1], and bits/dim "
                "adds log 256 per dimension (uniform dequantisation, Theis et al. 2016), but the density is evaluated "
                "at the pixel values, not at dequantised (noised) ones, so bits/dim is not a bound on a discrete "
                "log-likelihood: compare it with published discrete figures with care."]
    if binarize == "none" and not binary_images:
        return ["The images are grey levels, not binary: the Bernoulli term is then a cross-entropy, not a "
                "normalised likelihood, so -ELBO, -L_K and bits/dim are not comparable with published "
                "log-likelihoods (those use data.binarize=dynamic or static)."]
    if binarize == "static":
        return ["data.binarize=static is one Bernoulli draw of the images made here (seeded by data.binarize_seed), "
                "not the fixed binarised-MNIST file of Larochelle & Murray (2011): compare with results on "
                "dynamically binarised MNIST, or on that file, with care."]
    return []


def _first_tensor(batch: Any) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _model_device(model: Any) -> torch.device | None:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return None


def evaluate(
    model: Any,
    batches: Iterable[Any],
    k: int = 100,
    chunk_size: int | None = None,
    *,
    generator: torch.Generator | None = None,
    class_labels: Any = None,
) -> dict[str, float | int | None]:
    """Evaluate a model over a data set, returning exact per-image means (whatever the batch sizes).

    ``batches`` yields ``(x, y)`` pairs (or bare image tensors) with x in [0, 1]; x is moved to the model's
    device. Per batch the model runs one forward pass ``model(x)`` (for a VAE this draws one z per image),
    then, for a VAE with ``k ≥ 1``, :func:`importance_weighted_bound` with K = ``k``. Every per-image value is
    summed and divided by the image count at the end. The model runs in eval mode without gradients; its
    previous train/eval mode is restored.

    Keys (nats per image unless stated):

    * ``num_images``: N.
    * ``recon``: mean −log p(x | z) of the forward pass (a one-sample estimate of E_q[−log p(x|z)] for a VAE).
    * ``kl``: mean KL(q(z|x) ‖ p(z)) (closed form, Kingma & Welling 2014, app. B; for VQ-VAE's one-hot q,
      −log p of the codes).
    * ``neg_elbo``: ``recon + kl``, the negative ELBO (Kingma & Welling 2014, eq. 3), an upper bound on
      −log p(x).
    * ``bits_per_dim``: ``neg_elbo`` in bits per dimension (:func:`bits_per_dim`; for a likelihood that is a
      density on [0, 1], ``model.likelihood.continuous``, the 8-bit figure: log 256 per dimension added).
    * ``neg_iw_bound``: mean −L_K (Burda et al. 2016, eq. 8), a tighter upper bound on −log p(x).
    * ``iw_bits_per_dim``: ``neg_iw_bound`` in bits per dimension (the same way).
    * ``iw_k``: the K used.
    * ``active_units``: :class:`~vaelab.metrics.active_units.ActiveUnits` over the posterior means of all images.
    * ``mse``: the per-pixel mean squared error between x and ``likelihood.mean`` of the forward pass's
      decoder output, averaged over images and pixels (for a VAE the reconstruction decodes the sampled z).

    A deterministic autoencoder has no posterior and no likelihood bound, so ``kl``, ``neg_elbo``,
    ``bits_per_dim``, ``neg_iw_bound``, ``iw_bits_per_dim``, ``iw_k`` and ``active_units`` are ``None`` for it
    (rather than absent, so every result has the same keys). A code with a KL but no Gaussian posterior
    (``model.code.has_kl`` without ``variational``: VQ-VAE's) has ``kl``, ``neg_elbo`` and ``bits_per_dim``, but
    no importance-weighted bound and no active units. ``k = 0`` skips the importance-weighted bound for a VAE too:
    its three keys are then ``None``.

    A conditional model (``model.conditional``) is given each batch's labels (through ``class_labels`` where they
    are factor labels ``(B, F)``): its terms and bounds are then of log p(x | y).

    Raises:
        ValueError: for an empty ``batches``, images of differing sizes, or ``k < 0``.
    """
    k = int(k)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    variational = bool(getattr(model, "variational", True))
    # the ELBO needs only a KL; the importance-weighted bound and active units need a Gaussian posterior
    has_kl = bool(getattr(getattr(model, "code", None), "has_kl", variational))
    use_iw = variational and k > 0
    # a density on [0, 1] (a Gaussian) needs the 8-bit dequantisation term in bits/dim; a mass function does not
    dequantise = bool(getattr(getattr(model, "likelihood", None), "continuous", False))
    device = _model_device(model)

    sums: torch.Tensor | None = None  # recon, kl, neg_iw_bound, mse (per-pixel means), all float64
    num_images = 0
    num_dims: int | None = None
    codes = ActiveUnits(model.latent_dim) if variational else None
    with _eval_mode(model):
        for batch in batches:
            x = _first_tensor(batch)
            if device is not None:
                x = x.to(device)
            n = x.shape[0]
            if n == 0:
                continue
            dims = x[0].numel()
            if num_dims is None:
                num_dims = dims
            elif dims != num_dims:
                raise ValueError(f"all images must have the same size, got {dims} values after {num_dims}")
            given = {}
            if getattr(model, "conditional", False):
                y = batch[1].to(x.device)
                given["labels"] = class_labels(y) if y.ndim > 1 and class_labels is not None else y
            out = model(x, **given)
            iw = (importance_weighted_bound(model, x, k, chunk_size, generator=generator, **given) if use_iw
                  else None)
            se = (x - out.x_mean).pow(2).flatten(1).mean(dim=1)
            terms = torch.stack(
                [
                    out.recon.detach().double().sum(),
                    out.kl.detach().double().sum(),
                    (-iw).double().sum() if iw is not None else out.recon.new_zeros((), dtype=torch.float64),
                    se.double().sum(),
                ]
            )
            sums = terms if sums is None else sums + terms
            num_images += n
            if codes is not None:
                codes.update(out.mu.detach().cpu())

    if sums is None or num_dims is None:
        raise ValueError("evaluate needs at least one non-empty batch")
    recon, kl, neg_iw, mse = (sums / num_images).tolist()
    result: dict[str, float | int | None] = {
        "num_images": num_images,
        "recon": recon,
        "kl": None,
        "neg_elbo": None,
        "bits_per_dim": None,
        "neg_iw_bound": None,
        "iw_bits_per_dim": None,
        "iw_k": None,
        "active_units": None,
        "mse": mse,
    }
    if has_kl:
        neg_elbo = recon + kl
        result.update(kl=kl, neg_elbo=neg_elbo, bits_per_dim=float(bits_per_dim(neg_elbo, num_dims, dequantise)))
    if variational:
        result.update(active_units=int(codes.compute()))
        if use_iw:
            result.update(neg_iw_bound=neg_iw, iw_bits_per_dim=float(bits_per_dim(neg_iw, num_dims, dequantise)),
                          iw_k=k)
    return result
