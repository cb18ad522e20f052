"""The pure model: encode → code → decode, and the reconstruction term. A plain ``nn.Module``, usable from a notebook
without Lightning, a Trainer or Hydra's config composition (``vaelab.load`` gives one from a checkpoint).

How it is trained (the objective, the epoch means, the optimiser) is the Lightning module's business
(:class:`vaelab.training.module.AutoencoderModule`); what it computes for a batch is :meth:`Autoencoder.forward`, an
:class:`~vaelab.models.output.AutoencoderOutput` that objectives, metrics, dashboards and ``eval.py`` all read.

All terms are summed over pixels and latent dimensions, one value per image, in nats.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from vaelab import rules
from vaelab.models.codes import Code
from vaelab.models.likelihoods import make_likelihood
from vaelab.models.output import AutoencoderOutput

DEFAULT_NET = {
    "encoder": {"_target_": "vaelab.models.nets.MLPEncoder", "hidden_dims": [400]},
    "decoder": {"_target_": "vaelab.models.nets.MLPDecoder", "hidden_dims": [400]},
}
DEFAULT_CODE = {"_target_": "vaelab.models.codes.GaussianCode"}


def plain(cfg: Any) -> Any:
    """Hydra configs become plain containers, so a checkpoint holds only primitives."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


class Autoencoder(nn.Module):
    """An encoder, a code (:mod:`vaelab.models.codes`) and a decoder, with the decoder's likelihood.

    Args:
        image_shape: (channels, height, width) of the data.
        latent_dim: the code's size (a VQ code's vector size).
        code: a ``_target_`` config of a :class:`~vaelab.models.codes.Code` (default: the Gaussian posterior).
        net: ``{"encoder": <_target_ config>, "decoder": <_target_ config>}``; the model passes the shapes.
        likelihood: ``bernoulli`` (decoder outputs logits), ``gaussian`` (decoder outputs means),
            ``gaussian_per_pixel``, ``gaussian_shared`` or ``discretized_logistic`` (:mod:`vaelab.models.likelihoods`).
        likelihood_std: the fixed standard deviation of the Gaussian likelihood (``gaussian_shared``: its start).
        corruption: an optional ``_target_`` config of a corruption of the input (:mod:`vaelab.models.corruption`):
            the denoising autoencoder encodes a corrupted image and is scored on the clean one.
        num_classes: makes the model conditional on a class label (the conditional VAE, Sohn et al. 2015): the encoder
            sees the image with the one-hot label as ``num_classes`` constant planes, q(z|x, y), and the decoder sees
            z with the one-hot label appended, p(x|z, y); every pass then needs ``labels``. None: unconditional.
        prior: an optional ``_target_`` config of a prior p(z) of the model's own (:mod:`vaelab.models.priors`, e.g.
            the VampPrior) in place of the code's N(0, I); the KL is then the one-sample estimate
            log q(z|x) − log p(z), and sampling and the importance-weighted bound use it.
        channels_last: keep conv activations in channels-last memory format.
        compile: compile the encoder and decoder with ``torch.compile``.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        latent_dim: int = 16,
        code: Mapping[str, Any] | None = None,
        net: Mapping[str, Any] | None = None,
        likelihood: str = "bernoulli",
        likelihood_std: float = 0.1,
        corruption: Mapping[str, Any] | None = None,
        channels_last: bool = False,
        compile: bool = False,
        prior: Mapping[str, Any] | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        #: the arguments this model was built with, as plain values (what ``save_pretrained`` writes to config.json)
        self.config: dict[str, Any] = copy.deepcopy({
            "image_shape": plain(image_shape), "latent_dim": latent_dim, "code": plain(code), "net": plain(net),
            "likelihood": likelihood, "likelihood_std": likelihood_std, "corruption": plain(corruption),
            "channels_last": channels_last, "compile": compile, "prior": plain(prior),
            "num_classes": num_classes,
        })
        #: where a loaded model came from (run, objective, data, test metrics, command), for its model card; None
        #: for a model built here (``vaelab.load`` fills it, see :func:`vaelab.models.pretrained.provenance`)
        self.provenance: dict[str, Any] | None = None
        rules.check("model.latent_dim", latent_dim)
        rules.check("model.likelihood", likelihood)
        self.image_shape = tuple(int(s) for s in plain(image_shape))
        self.latent_dim = int(latent_dim)
        self.likelihood = make_likelihood(likelihood, likelihood_std)
        self.code: Code = instantiate(plain(code) or DEFAULT_CODE)
        self.code.build(self.latent_dim)
        if num_classes is not None:
            rules.check("model.num_classes", num_classes)
            if not self.code.continuous:
                raise ValueError(f"model.num_classes makes the model conditional, which needs a continuous code, not a "
                                 f"{type(self.code).__name__}: remove model.num_classes or use model.code=gaussian")
        #: the number of classes the model is conditioned on (None: an unconditional model)
        self.num_classes = None if num_classes is None else int(num_classes)
        extra = self.num_classes or 0
        net = plain(net) or DEFAULT_NET
        channels, *size = self.image_shape
        self.encoder = instantiate(net["encoder"], image_shape=[channels + extra, *size],
                                   out_features=self.code.encoder_features(self.latent_dim))
        # (the decoder outputs what the likelihood reads: e.g. a mean and a log-variance per pixel and channel)
        self.decoder = instantiate(net["decoder"], image_shape=[self.likelihood.output_channels(channels), *size],
                                   latent_dim=self.latent_dim + extra)
        self.corruption = instantiate(plain(corruption)) if corruption else None
        #: the model's own prior p(z) (None: the code's own, N(0, I) for a Gaussian code)
        self.prior = instantiate(plain(prior)) if prior else None
        if self.prior is not None:
            if not self.code.variational:
                raise ValueError(f"model.prior needs a code with a posterior density q(z|x), but model.code is a "
                                 f"{type(self.code).__name__}: use model.code=gaussian")
            self.prior.build(self)
        self.channels_last = bool(channels_last)
        if compile:  # nn.Module.compile keeps the state_dict keys, pickles and deep-copies
            self.encoder.compile()
            self.decoder.compile()

    # ------------------------------------------------------------------ what the code is
    @property
    def variational(self) -> bool:
        """Whether q(z|x) is a density (the ELBO's KL and the importance-weighted bound are defined)."""
        return self.code.variational

    @property
    def conditional(self) -> bool:
        """Whether the model is conditioned on a class label (``num_classes``): every pass then takes ``labels``."""
        return self.num_classes is not None

    def _one_hot(self, labels: torch.Tensor | None, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        if labels is None:
            raise ValueError(f"this model is conditional (model.num_classes={self.num_classes}): pass the class "
                             "labels of the images or codes, labels=<(N,) tensor of class indices>")
        labels = torch.as_tensor(labels, device=device).long().reshape(-1)
        if labels.numel() == 1 and n != 1:
            labels = labels.expand(n)
        if labels.numel() != n:
            raise ValueError(f"{labels.numel()} labels for {n} images: give one class index per image")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must be class indices in [0, {self.num_classes}), got {labels.min().item()} to "
                             f"{labels.max().item()}")
        return nn.functional.one_hot(labels, self.num_classes).to(dtype)

    @property
    def has_prior(self) -> bool:
        """Whether images can be generated from a prior p(z) (the model's own or the code's)."""
        return self.prior is not None or bool(self.code.has_prior)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    # ------------------------------------------------------------------ the pass
    def features(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's output for images ``x`` (and, for a conditional model, their ``labels`` as one-hot planes),
        before the code makes z of it."""
        if self.conditional:
            planes = self._one_hot(labels, x.shape[0], x.dtype, x.device)[:, :, None, None]
            x = torch.cat([x, planes.expand(-1, -1, *x.shape[2:])], dim=1)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.encoder(x)

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x`` as the encoder of a denoising autoencoder sees it in training (``x`` itself without a corruption)."""
        return x if self.corruption is None else self.corruption(x, generator=generator)

    def forward(self, x: torch.Tensor, corrupt: bool | None = None,
                labels: torch.Tensor | None = None) -> AutoencoderOutput:
        """Encode, make z (a draw from q(z|x) for a Gaussian code), decode, and score the reconstruction of ``x``.

        A model with a corruption encodes the corrupted image when ``corrupt`` (default: in training mode) and is
        scored on the clean ``x``; validation and testing (eval mode) see clean images. A conditional model takes the
        images' class ``labels``.
        """
        corrupt = self.training if corrupt is None else corrupt
        x_in = self.corrupt(x) if corrupt else x
        h = self.features(x_in, labels)
        code = self.code(h)
        kl = code.kl if self.prior is None else self.code.log_q(code) - self.prior.log_prob(code.z, self)
        x_out = self.decode(code.z, labels)
        return AutoencoderOutput(
            x_out=x_out, z=code.z, mu=code.mu, logvar=code.logvar, recon=self.likelihood.nll(x_out, x), kl=kl,
            likelihood=self.likelihood, x_in=x_in, extras=code.extras, features=h,
        )

    # ------------------------------------------------------------------ the prior and the posterior's draws
    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) under the model's prior (its own, else the code's), summed over the last dimension."""
        return self.code.prior_log_prob(z) if self.prior is None else self.prior.log_prob(z, self)

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` codes z ~ p(z) (drawn on the CPU with ``generator`` where the prior is fixed)."""
        if self.prior is None:
            return self.code.prior_sample(n, self.latent_dim, generator)
        return self.prior.sample(n, self, generator)

    def latent_draws(self, h: torch.Tensor, n: int,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` draws z ~ q(z|x) for each image of encoder features ``h``, ``(n, B, D)``, and log p(z) − log q(z|x)
        of each, ``(n, B)``: the latent side of the importance-weighted bound (:mod:`vaelab.models.importance`)."""
        return self.code.importance_draws(h, n, generator, None if self.prior is None else self.prior_log_prob)

    # ------------------------------------------------------------------ what a user asks of a trained model
    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The deterministic code of ``x`` (μ of q(z|x), an AE's z, VQ-VAE's quantised vectors) and log σ² of
        q(z|x) (None for a code without a posterior)."""
        return self.code.locate(self.features(x, labels))

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's raw output for codes ``z`` (logits for Bernoulli), given their class ``labels`` for a
        conditional model; :meth:`mean` makes an image of it."""
        if self.conditional:
            z = torch.cat([z, self._one_hot(labels, z.shape[0], z.dtype, z.device)], dim=1)
        return self.decoder(z)

    def mean(self, output: torch.Tensor) -> torch.Tensor:
        """The image of a raw decoder output: the likelihood's mean."""
        return self.likelihood.mean(output)

    def embed(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """One feature vector per image, ``(B, d)``: the deterministic code, flattened (what representation and
        disentanglement metrics score)."""
        return self.encode(x, labels)[0].flatten(1)

    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The image decoded from the deterministic code of ``x`` (no sampling)."""
        return self.mean(self.decode(self.encode(x, labels)[0], labels))

    def sample(self, n: int, generator: torch.Generator | None = None, sampler: Any = None,
               labels: torch.Tensor | int | None = None) -> torch.Tensor:
        """``n`` images decoded from z ~ p(z), or from ``sampler`` (:mod:`vaelab.models.samplers`, e.g. a Gaussian
        mixture fitted on the training codes) when given. A code without a prior needs a sampler.

        A conditional model draws images of the classes ``labels`` (one per image, or one class for all); without
        them the classes are drawn uniformly, with ``generator`` (what an unconditional score of its samples needs).
        """
        if sampler is None:
            z = self.prior_sample(n, generator)
        elif not sampler.available_for(self):
            raise ValueError(f"{type(sampler).__name__} cannot sample a {type(self.code).__name__}: use sampler=prior")
        else:
            z = sampler.sample(self, n, generator)
        if self.conditional and labels is None:
            labels = torch.randint(self.num_classes, (n,), generator=generator)
        return self.mean(self.decode(z.to(self.device), labels))

    # ------------------------------------------------------------------ sharing it
    def save_pretrained(self, folder: str | Path, license: str | None = None, **card_fields: Any) -> Path:
        """Write this model to ``folder`` as ``model.safetensors`` (the weights), ``config.json`` (its settings) and
        ``README.md`` (a model card with its family, data, test metrics, training command and ``license``; what is
        not known is said to be unknown), which ``vaelab.load(folder)`` reads back without any pickle, and which
        ``huggingface_hub.upload_folder`` can publish. See :func:`vaelab.models.pretrained.save_pretrained`."""
        from vaelab.models.pretrained import save_pretrained

        return save_pretrained(self, folder, license=license, **card_fields)
