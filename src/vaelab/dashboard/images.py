"""Image grids: reconstructions, samples from the prior and latent traversals.

The reconstruction and traversal grids carry labelled margins (:func:`vaelab.dashboard.grids.labelled_grid`): which
row is an input and which its reconstruction; which dimension a traversal row walks, its KL, and the z values.
``min_side`` enlarges small images (by a whole factor, nearest neighbour) to at least that many pixels; the defaults
make each grid about the size TensorBoard's card shows it at (see :mod:`vaelab.dashboard.grids`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F

from vaelab.dashboard.base import DashboardCallback, classes_of
from vaelab.dashboard.grids import ALERT, MUTED, cell_side, image_grid, labelled_grid, signed, to_uint8, upscale
from vaelab.dashboard.health import code_health
from vaelab.models.distributions import kl_per_dimension
from vaelab.models.samplers import check_fits_data

__all__ = ["LatentTraversal", "PriorSamples", "ReconstructionGrid", "image_grid", "upscale"]

log = logging.getLogger(__name__)

#: the sample-quality scores the samples view shows in its title, when they were logged (val/fcd, …)
SAMPLE_SCORES = {"fcd": "FCD", "precision": "precision", "recall": "recall"}


class ReconstructionGrid(DashboardCallback):
    """``<split>/reconstructions``: rows of inputs, each above the row of its reconstructions, labelled ``input``
    and ``recon``; a red title when the VAE's code has collapsed (see :mod:`vaelab.dashboard.health`). For a model
    with a corruption of its input (the denoising autoencoder) each input has two more rows: the ``corrupted``
    image (the same draws every epoch) and its ``denoised`` reconstruction."""

    def __init__(self, nrow: int = 8, min_side: int = 24, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nrow, self.min_side = nrow, min_side

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        groups = [("input", x), ("recon", out.x_mean)]
        if getattr(module, "corruption", None) is not None:
            corrupted = module.corrupt(x, generator=torch.Generator().manual_seed(self.seed))
            groups += [("corrupted", corrupted), ("denoised", module.reconstruct(corrupted))]
        rows, labels = [], []
        for start in range(0, len(x), self.nrow):
            for label, images in groups:
                rows.append(images[start : start + self.nrow])
                labels.append(label)
        pairs = torch.cat([F.pad(r, (0, 0, 0, 0, 0, 0, 0, self.nrow - len(r)), value=0.5) for r in rows])
        grid, side = to_uint8(image_grid(pairs, self.nrow, self.min_side)), cell_side(pairs, self.min_side)
        health = code_health(out)
        title = (health.headline(), ALERT) if health is not None and health.collapsed else None
        tag = f"{tag_prefix}/reconstructions"
        self.in_background(  # the labels and the PNG encoding
            lambda: writer.add_image(tag, labelled_grid(grid, side, labels, title=title), step, dataformats="HWC")
        )


class PriorSamples(DashboardCallback):
    """``<split>/samples``: images decoded from the same draws each epoch, titled with the latest sample-quality scores
    when ``callbacks.sample_quality`` logged them (``FCD 41.2 · precision 0.81 · recall 0.46``), from the code's
    prior (``sampler=prior``:
    z ~ N(0, I) for a VAE, VQ-VAE's uniform or learned prior over its code grid) or from a Gaussian mixture fitted on
    the codes of the first ``fit_images`` training images before each drawing (``sampler=gmm``,
    :class:`~vaelab.models.samplers.GaussianMixtureSampler`: an autoencoder can generate too). Nothing for a code
    without a prior under ``sampler=prior`` (said once in the log)."""

    def __init__(self, nrow: int = 8, min_side: int = 24, sampler: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nrow, self.min_side = nrow, min_side
        self.sampler = sampler
        self._said = False
        self._scores: dict[str, float] = {}

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Also refuse a sampler with too few training codes to fit it on, before the first step."""
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and getattr(trainer, "datamodule", None) is not None:
            check_fits_data(self.sampler, trainer.datamodule)

    def draw_now(self, trainer, pl_module, step: int | None = None) -> None:
        # the latest sample-quality scores (callbacks.sample_quality), for the card's title
        metrics = getattr(trainer, "callback_metrics", {}) or {}
        self._scores = {name: float(metrics[f"val/{name}"]) for name in SAMPLE_SCORES if f"val/{name}" in metrics}
        model = getattr(pl_module, "model", pl_module)
        if self.sampler is not None and self.sampler.needs_fit:
            n = getattr(self.sampler, "fit_images", 10_000)
            images, labels = trainer.datamodule.fixed_batch("train", n)
            given = ({"labels": trainer.datamodule.class_labels(labels).to(model.device)}
                     if getattr(model, "conditional", False) else {})
            was_training = model.training
            model.eval()
            try:  # (drawing nothing from the training's random generators)
                with torch.random.fork_rng(devices=[]), torch.no_grad():
                    self.sampler.fit(model.embed(images.to(model.device), **given))
            finally:
                model.train(was_training)
        super().draw_now(trainer, pl_module, step)

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        available = module.has_prior if self.sampler is None else self.sampler.available_for(module)
        if not available:  # a deterministic autoencoder has no prior to sample from
            if not self._said:
                log.info("%s: a %s has no prior to sample from; sampler=gmm fits one on the training codes",
                         type(self).__name__, type(module.code).__name__)
                self._said = True
            return
        if getattr(module, "conditional", False):
            self.draw_classes(writer, tag_prefix, step, module)
            return
        samples = module.sample(self.num_images, sampler=self.sampler)  # the base class seeded the RNG
        grid = to_uint8(image_grid(samples, self.nrow, self.min_side))
        if not self._scores:
            self.in_background(lambda: writer.add_image(f"{tag_prefix}/samples", grid, step, dataformats="HWC"))
            return
        side, scores = cell_side(samples, self.min_side), self._scores
        title = (" · ".join(f"{SAMPLE_SCORES[k]} {scores[k]:.3g}" for k in SAMPLE_SCORES if k in scores), MUTED)
        self.in_background(lambda: writer.add_image(
            f"{tag_prefix}/samples", labelled_grid(grid, side, [], title=title), step, dataformats="HWC"))


    def draw_classes(self, writer, tag_prefix, step, module) -> None:
        """A conditional model's samples: one row per class (labelled with its name), ``nrow`` draws each."""
        count = int(module.num_classes)
        labels = torch.arange(count).repeat_interleave(self.nrow)
        samples = module.sample(len(labels), sampler=self.sampler, labels=labels)
        grid, side = to_uint8(image_grid(samples, self.nrow, self.min_side)), cell_side(samples, self.min_side)
        names = self.class_names if self.class_names and len(self.class_names) == count else range(count)
        rows = [f"class {name}" for name in names]
        self.in_background(lambda: writer.add_image(
            f"{tag_prefix}/samples", labelled_grid(grid, side, rows, title=("one row per class", MUTED)), step,
            dataformats="HWC"))


class LatentTraversal(DashboardCallback):
    """``<split>/traversal``: one row per latent dimension, walking it around the posterior mean (the code) of the
    first image in ``steps`` even steps from −``span`` to +``span`` while the other dimensions stay put.

    For a VAE the steps are in the prior's units (its standard deviation is 1) and the rows are the ``max_dims``
    dimensions with the most KL on the fixed images, most first (the ones the decoder uses). An AE's code has no
    scale of its own, so its first ``max_dims`` dimensions are walked in units of each one's spread (the standard
    deviation of the code over the fixed images). Each row is labelled with its dimension, its KL (a VAE's) or
    spread (an AE's), and the range of z it walks; the columns with their offset. A code grid (VQ-VAE's) is not a
    vector of dimensions to walk: it is left out.

    A code with categorical parts (JointVAE's, :class:`~vaelab.models.joint_code.JointCode`: it has
    ``continuous_dim`` and ``discrete_slices()``) has its continuous dimensions walked as above (in units of their
    spread: the code gives no per-dimension log-variance) and a second card, ``<split>/traversal_discrete``: one
    row per categorical part, whose column k decodes the first image's code with that part set to category k.
    """

    def __init__(self, max_dims: int = 10, steps: int = 9, span: float = 3.0, min_side: int = 16,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_dims, self.steps, self.span, self.min_side = max_dims, steps, span, min_side

    def walk(self, out, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                           torch.Tensor | None]:
        """The dimensions walked (in row order), the unit of each one's steps, the offsets (in those units) and, for
        a VAE, each dimension's mean KL; only the first ``width`` dimensions when given (a joint code's continuous
        ones)."""
        mu = out.mu if width is None else out.mu[:, :width]
        dims = min(self.max_dims, mu.shape[1])
        if out.logvar is None:
            order, kl = torch.arange(dims, device=mu.device), None
            spread = mu.std(0, unbiased=False) if len(mu) > 1 else torch.ones_like(mu[0])
            unit = spread[order]
        else:
            kl = kl_per_dimension(mu, out.logvar).mean(0)
            order = kl.argsort(descending=True)[:dims]
            unit = torch.ones(dims, device=mu.device, dtype=mu.dtype)
        offsets = torch.linspace(-self.span, self.span, self.steps, device=mu.device, dtype=mu.dtype)
        return order, unit, offsets, kl

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        if out.mu.dim() != 2:
            return
        slices = self.categorical_parts(module)
        if slices:
            self.draw_categories(writer, tag_prefix, step, module, y, out, slices)
        order, unit, offsets, kl = self.walk(out, module.code.continuous_dim if slices else None)
        dims = len(order)
        z = out.mu[:1].repeat(dims * self.steps, 1)
        labels = []
        for row, (d, u) in enumerate(zip(order.tolist(), unit.tolist(), strict=True)):
            z[row * self.steps : (row + 1) * self.steps, d] += offsets * u
            lo, hi = z[row * self.steps, d].item(), z[(row + 1) * self.steps - 1, d].item()
            measure = f"{kl[d].item():.2f} nats" if kl is not None else f"sd {u:.2g}"
            dead = kl is not None and kl[d].item() < 0.01
            labels.append((f"z{d} · {measure} · {signed(lo, 1)}…{signed(hi, 1)}", MUTED if dead else (20, 20, 20)))
        images = module.likelihood.mean(module.decode(z, **classes_of(module, y[:1], len(z))))
        grid, side = to_uint8(image_grid(images, self.steps, self.min_side)), cell_side(images, self.min_side)
        cols = [signed(v) for v in offsets.tolist()]
        # z = the first image's code + k × (the prior's sd, 1 | the dimension's sd), k along the columns
        caption = "z = μ₀ + k, k:" if kl is not None else "z = μ₀ + k·sd, k:"
        tag = f"{tag_prefix}/traversal"
        self.in_background(lambda: writer.add_image(
            tag, labelled_grid(grid, side, labels, cols, col_caption=caption), step, dataformats="HWC"))

    # ------------------------------------------------------------------ a code's categorical parts (JointVAE's)
    @staticmethod
    def categorical_parts(module) -> list[slice]:
        """Where the code's categorical parts lie in z (none for a code without them)."""
        parts = getattr(getattr(module, "code", None), "discrete_slices", None)
        return list(parts()) if callable(parts) else []

    def draw_categories(self, writer, tag_prefix, step, module, y, out, slices: list[slice]) -> None:
        """``<split>/traversal_discrete``: row i decodes the first image's code with categorical part i set to each
        of its categories in turn (column k: category k), the other parts and the continuous dimensions kept; rows
        of parts with fewer categories are padded with grey cells."""
        width = max(s.stop - s.start for s in slices)
        codes, labels = [], []
        for i, part in enumerate(slices):
            n = part.stop - part.start
            z = out.mu[:1].repeat(n, 1)
            z[:, part] = torch.eye(n, device=z.device, dtype=z.dtype)
            codes.append(z)
            labels.append((f"c{i} · {n} categories · μ₀: {int(out.mu[0, part].argmax())}", (20, 20, 20)))
        z = torch.cat(codes)
        decoded = module.likelihood.mean(module.decode(z, **classes_of(module, y[:1], len(z))))
        rows, start = [], 0
        for part_codes in codes:
            row = decoded[start : start + len(part_codes)]
            rows.append(F.pad(row, (0, 0, 0, 0, 0, 0, 0, width - len(row)), value=0.5))
            start += len(part_codes)
        images = torch.cat(rows)
        grid, side = to_uint8(image_grid(images, width, self.min_side)), cell_side(images, self.min_side)
        cols = [str(k) for k in range(width)]
        tag = f"{tag_prefix}/traversal_discrete"
        self.in_background(lambda: writer.add_image(
            tag, labelled_grid(grid, side, labels, cols, col_caption="category:"), step, dataformats="HWC"))
