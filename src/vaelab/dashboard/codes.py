"""The codes themselves: histograms of μ and log σ² (TensorBoard's Histograms tab) and the Projector (its
Projector tab), where a person can rotate the posterior means in 3-D, run t-SNE or UMAP, and see each point's
image."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from google.protobuf import text_format
from lightning import LightningModule, Trainer
from PIL import Image
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

from vaelab.dashboard.base import DashboardCallback, logging_step
from vaelab.dashboard.grids import upscale

log = logging.getLogger(__name__)


class LatentHistograms(DashboardCallback):
    """``<split>/mu`` and, for a VAE, ``<split>/logvar`` (Histograms): every dimension's posterior means and
    log-variances over the fixed images, pooled. A healthy VAE's μ spread over about ±2 and its log σ² sit well below
    0; a collapsed one's are both a spike at 0 (μ = 0, σ = 1: the prior). With ``per_dimension``, also one
    histogram per dimension (``<split>/mu_z<d>``, ``<split>/logvar_z<d>``)."""

    def __init__(self, num_images: int = 1000, per_dimension: bool = False, **kwargs: Any) -> None:
        super().__init__(num_images=num_images, **kwargs)
        self.per_dimension = per_dimension

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        series = {"mu": out.mu.float().cpu().numpy()}  # (numpy: the worker runs no torch operation)
        if out.logvar is not None:
            series["logvar"] = out.logvar.float().cpu().numpy()
        per_dimension = self.per_dimension

        def render() -> None:
            for name, values in series.items():
                writer.add_histogram(f"{tag_prefix}/{name}", values.reshape(-1), step)
                if per_dimension:
                    for d in range(values.shape[1]):
                        writer.add_histogram(f"{tag_prefix}/{name}_z{d}", values[:, d], step)

        self.in_background(render)


class Projector(DashboardCallback):
    """``<split>/mu`` (Projector), at the end of training only (at the step of the last validation epoch): the
    posterior means (an AE's codes) of ``num_images`` fixed images, with their class and index as metadata and the
    images as sprite thumbnails (enlarged to at least ``thumbnail_side`` pixels). Written by
    :func:`write_embedding` straight into the run's TensorBoard folder. Codes of fewer than 3 dimensions are left
    out: the Projector's PCA shows none of their points."""

    #: (written once, at the end of training)
    budgeted = False

    def __init__(self, num_images: int = 1000, thumbnail_side: int = 28, **kwargs: Any) -> None:
        super().__init__(num_images=num_images, **kwargs)
        self.thumbnail_side = thumbnail_side
        self._step: int | None = None  # that of the last validation epoch

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:  # never drawn here: only the step is kept, to line up with the images
            self._step = logging_step(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            self.draw_now(trainer, pl_module, step=self._step)
        super().on_train_end(trainer, pl_module)  # waits for the writing

    def draw(self, writer, tag_prefix, step, module, x, y, out) -> None:
        mu = out.mu.flatten(1).float().cpu().numpy()  # (a code grid as one vector)
        if mu.shape[1] < 3:  # its PCA needs 3 dimensions: it shows no point of a 1- or 2-D code
            log.info("Projector: a %d-D code is left out (val/latent_space and val/manifold show it whole)",
                     mu.shape[1])
            return
        names = self.class_names
        metadata = [(names[k] if names is not None and 0 <= k < len(names) else str(k), str(i))
                    for i, k in enumerate(y.cpu().tolist())]
        thumbnails = upscale(x.float().clamp(0, 1).cpu(), self.thumbnail_side)
        log_dir, tag = Path(writer.get_logdir()), f"{tag_prefix}/mu"
        self.in_background(lambda: write_embedding(log_dir, tag, step, mu, metadata, ("class", "index"), thumbnails))


def sprite(images: torch.Tensor) -> Image.Image:
    """``images`` (N, C, H, W) in [0, 1] tiled row by row into the square sprite the Projector reads (ceil(√N) to a
    side, black where there are none): greyscale when C is 1, else RGB."""
    n, channels, height, width = images.shape
    side = max(1, math.ceil(math.sqrt(n)))
    pixels = images.mul(255).round().to(torch.uint8)
    if channels not in (1, 3):
        pixels = pixels[:, :1]
    padded = torch.cat([pixels, pixels.new_zeros(side * side - n, *pixels.shape[1:])])
    canvas = padded.reshape(side, side, pixels.shape[1], height, width).permute(2, 0, 3, 1, 4)
    canvas = canvas.reshape(pixels.shape[1], side * height, side * width)
    array = canvas[0].numpy() if pixels.shape[1] == 1 else canvas.permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array))


def write_embedding(log_dir: Path, tag: str, step: int, mat: np.ndarray, metadata: list[tuple[str, ...]],
                    header: tuple[str, ...], thumbnails: torch.Tensor) -> Path:
    """An embedding for TensorBoard's Projector, as ``SummaryWriter.add_embedding`` writes one (``<step>/<tag>/``
    with tensors.tsv, metadata.tsv and sprite.png, and an entry in ``projector_config.pbtxt``, whose other entries
    are kept), but with a greyscale sprite PNG compressed for speed: a tenth of its time for 1,000 thumbnails."""
    folder = log_dir / f"{step:05d}" / tag.replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / "tensors.tsv", mat, delimiter="\t", fmt="%.7g")
    rows = ["\t".join(header), *("\t".join(row) for row in metadata)]
    (folder / "metadata.tsv").write_text("\n".join(rows) + "\n")
    sprite(thumbnails).save(folder / "sprite.png", compress_level=1)

    config_path = log_dir / "projector_config.pbtxt"
    config = ProjectorConfig()
    if config_path.is_file():
        text_format.Parse(config_path.read_text(), config)
    name = f"{tag}:{step:05d}"
    kept = [e for e in config.embeddings if e.tensor_name != name]
    del config.embeddings[:]
    config.embeddings.extend(kept)
    entry = config.embeddings.add()
    entry.tensor_name = name
    relative = folder.relative_to(log_dir).as_posix()
    entry.tensor_path = f"{relative}/tensors.tsv"
    entry.metadata_path = f"{relative}/metadata.tsv"
    entry.sprite.image_path = f"{relative}/sprite.png"
    entry.sprite.single_image_dim.extend([thumbnails.shape[-1], thumbnails.shape[-2]])
    config_path.write_text(text_format.MessageToString(config))
    return folder
