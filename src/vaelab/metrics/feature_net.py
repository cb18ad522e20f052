"""Small classifiers trained here, whose penultimate layer is the feature space of the sample-quality metrics.

No Inception network can be downloaded on this project's machines, so the Fréchet distance and precision/recall
(:mod:`vaelab.metrics.sample_quality`) are computed on the features of a classifier trained here on the same kind
of images: a "Fréchet classifier distance", not the FID of Heusel et al. (2017), which is defined on Inception's
pool3 features. Three networks ship as package data, each checked against its SHA-256 when loaded:

* ``mnist``: 28×28 images, three 3×3 conv blocks (32, 64, 64 channels, each ReLU and 2×2 max-pooling), a
  128-unit ReLU layer and the 10-way output; trained on MNIST's 60,000 training images.
* ``digits``: 8×8 images (scikit-learn's digits, vaelab's default data set), two 3×3 convs (32, 64 channels, one
  2×2 max-pool), a 64-unit ReLU layer and the 10-way output; trained on the train split as
  :class:`~vaelab.data.DigitsDataModule` draws it (never on its val or test images).
* ``shapes_color``: 3 × 32 × 32 RGB images (``data=shapes_color``), three 3×3 conv blocks (16, 32, 64 channels,
  each ReLU; 2×2 max-pooling after the first two, a global max-pool after the third), a 128-unit ReLU layer and
  an 18-way output: the shape × colour class
  (shape · 6 + colour) of the image; trained on the train split as
  :class:`~vaelab.data.shapes.ColorShapesDataModule` draws it with ``conf/data/shapes_color.yaml``'s settings.

The features are the pre-activations of the 128- (64-) unit layer (see :meth:`FeatureNet.features`).

They take images as floats in [0, 1] (or uint8 in 0..255), shape ``(N, C, H, W)`` (or ``(N, H, W)`` for the grey
ones). The digit networks are trained on grey-level images and on Bernoulli draws of them (half of the MNIST
batches, a quarter of the digits'), so binarised data and binary samples are in their domain (:data:`TRAINING`).
``scripts/train_feature_net.py`` remakes a file (the command is in docs/metrics.md).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["FEATURE_NETS", "FeatureNet", "WeightsError", "check_weights", "extract_features", "feature_net_for",
           "load_feature_net", "train_classifier"]

WEIGHTS_DIR = Path(__file__).parent / "weights"


class WeightsError(RuntimeError):
    """A feature network's weights file is missing or is not the file this version of vaelab was built with."""


@dataclass(frozen=True)
class FeatureNetSpec:
    """What a shipped feature network is: its input size, its file and that file's SHA-256."""

    name: str
    image_size: int
    filename: str
    sha256: str
    #: the exact command that remakes the file (run from the repository root; see docs/metrics.md)
    command: str
    #: the accuracy of the shipped file on its data's test split (measured when it was made)
    test_accuracy: float | None = None
    channels: int = 1
    num_classes: int = 10

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.filename

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The (channels, height, width) of the images the network takes."""
        return (self.channels, self.image_size, self.image_size)


FEATURE_NETS: dict[str, FeatureNetSpec] = {
    "mnist": FeatureNetSpec(
        "mnist", 28, "mnist_classifier.pt",
        "130a09eef2b41503a6cdfedb540cce29a0eb8fb1a1ae144cc79efdd99d1f8c95",
        "python scripts/train_feature_net.py mnist --data-dir data", test_accuracy=0.9933,
    ),
    "digits": FeatureNetSpec(
        "digits", 8, "digits_classifier.pt",
        "f88701fd0a93272cf8c3c9dc9e34f100a3d57b7701d6ed646b7b4bf1f01af019",
        "python scripts/train_feature_net.py digits", test_accuracy=0.9889,
    ),
    "shapes_color": FeatureNetSpec(
        "shapes_color", 32, "shapes_color_classifier.pt",
        "77ffdef9fed1302071bc8477a9bdb85de72b2345d51fc7ff94255393661dab2c",
        "python scripts/train_feature_net.py shapes_color", test_accuracy=0.9729, channels=3, num_classes=18,
    ),
}


def feature_net_for(image_shape: Any) -> str | None:
    """The name of the shipped feature network for images of ``image_shape`` (channels, height, width): MNIST's
    1×28×28, the digits' 1×8×8, shapes_color's 3×32×32; None for any other shape."""
    shape = tuple(int(s) for s in image_shape)
    return next((name for name, spec in FEATURE_NETS.items() if spec.image_shape == shape), None)


class FeatureNet(nn.Module):
    """A small conv classifier; :meth:`features` is its penultimate layer before the ReLU, :meth:`forward` its
    logits (ReLU, dropout, linear)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in FEATURE_NETS:
            raise ValueError(f"unknown feature network {name!r}: choose one of {sorted(FEATURE_NETS)}")
        self.name = name
        spec = FEATURE_NETS[name]
        self.image_size, self.channels = spec.image_size, spec.channels
        if name == "mnist":
            self.body = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 14×14
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 7×7
                nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 3×3
                nn.Flatten(), nn.Linear(64 * 3 * 3, 128),
            )
            width = 128
        elif name == "shapes_color":
            # (a global max-pool: a shape's features are the same wherever it is; with a flattened 4×4 map the
            # classifier had to learn each shape at every position, and stayed at chance on shape for 1,000 steps)
            self.body = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 16×16
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8×8
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1),
                nn.Flatten(), nn.Linear(64, 128),
            )
            width = 128
        else:
            self.body = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4×4
                nn.Flatten(), nn.Linear(64 * 4 * 4, 64),
            )
            width = 64
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(width, spec.num_classes)
        self.feature_dim = width

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` as a float ``(N, C, S, S)`` batch in [0, 1] on this net's device, or a ValueError."""
        if not isinstance(images, torch.Tensor):
            images = torch.as_tensor(images)
        if images.ndim == 3 and self.channels == 1:
            images = images.unsqueeze(1)
        s, c = self.image_size, self.channels
        if images.ndim != 4 or tuple(images.shape[1:]) != (c, s, s):
            kind = f"grey images of shape (N, 1, {s}, {s}) or (N, {s}, {s})" if c == 1 else \
                f"images of shape (N, {c}, {s}, {s})"
            raise ValueError(f"the {self.name} feature network takes {kind}, got {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        elif not images.is_floating_point():
            raise ValueError(f"images must be floats in [0, 1] or uint8, got dtype {images.dtype}")
        images = images.to(next(self.parameters()).device, torch.float32)
        if images.numel() and not (torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1):
            raise ValueError(
                "images must be in [0, 1] (pixel intensities or Bernoulli means; pass sigmoid(logits), not logits)"
            )
        return images

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate layer's pre-activations, ``(N, feature_dim)``: the ReLU would map every image the
        classifier finds unlike any digit (noise, a blur) to a small region near the origin, next to faint digits,
        where the k-NN balls of precision/recall take it in (docs/metrics.md)."""
        return self.body(self.prepare(images) * 2.0 - 1.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(torch.relu(self.features(images))))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


REINSTALL = ("Reinstall vaelab (pip install --force-reinstall --no-deps vaelab; in a checkout of the repository, "
             "restore the file with git checkout -- src/vaelab/metrics/weights/{filename})")


def check_weights(name: str, path: str | Path | None = None, *, sha256: str | None = None) -> Path:
    """The weights file of feature network ``name``, checked: there, and with the SHA-256 this version of vaelab
    was measured with (the shipped file always; another ``path`` against ``sha256`` when given). A missing file or
    a digest that differs raises a :class:`WeightsError` naming the file, both digests and what to do: reinstall
    vaelab, or remake the file."""
    if name not in FEATURE_NETS:
        raise ValueError(f"unknown feature network {name!r}: choose one of {sorted(FEATURE_NETS)}")
    spec = FEATURE_NETS[name]
    file = Path(path) if path is not None else spec.path
    expected = spec.sha256 if path is None else sha256
    remedy = REINSTALL.format(filename=spec.filename) if path is None else "Give the right file"
    if not file.is_file():
        raise WeightsError(f"the {name} feature network's weights {file} are missing. {remedy}, or remake them "
                           f"with `{spec.command}`")
    if expected is not None:
        actual = sha256_of(file)
        if actual != expected:
            raise WeightsError(
                f"the {name} feature network's weights {file} have SHA-256 {actual}, not the expected {expected}: "
                f"the file is damaged, or is not the one this version of vaelab was measured with. {remedy}, or "
                f"remake it with `{spec.command}` and update FEATURE_NETS in {Path(__file__).name}"
            )
    return file


def load_feature_net(name: str, path: str | Path | None = None, *, sha256: str | None = None,
                     device: str | torch.device = "cpu") -> FeatureNet:
    """The shipped feature network ``name`` (one of :data:`FEATURE_NETS`) in eval mode, its file's SHA-256 checked.

    ``path`` loads another file of the same architecture instead (then ``sha256``, if given, is checked; the
    shipped file is always checked against :data:`FEATURE_NETS`). A missing file or a digest that differs raises a
    :class:`WeightsError` (see :func:`check_weights`).
    """
    file = check_weights(name, path, sha256=sha256)
    net = FeatureNet(name)
    state = torch.load(file, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.to(device).eval()


@torch.no_grad()
def extract_features(net: FeatureNet, images: Any, batch_size: int = 1000) -> torch.Tensor:
    """The penultimate features of ``images`` (float64 ``(N, feature_dim)`` on the CPU), ``batch_size`` at a time, in
    eval mode (the net's previous mode is restored)."""
    was_training = net.training
    net.eval()
    try:
        out = [net.features(images[i : i + batch_size]).double().cpu() for i in range(0, len(images), batch_size)]
    finally:
        net.train(was_training)
    if not out:
        raise ValueError("no images to extract features from")
    return torch.cat(out)


# --------------------------------------------------------------------------------------------------------------
# Training (scripts/train_feature_net.py)
# --------------------------------------------------------------------------------------------------------------


def _augment(x: torch.Tensor, shift: int, binarised: float, generator: torch.Generator) -> torch.Tensor:
    """Random translations by up to ``shift`` pixels (zero padding), and a Bernoulli draw of a fraction
    ``binarised`` of the images."""
    n, c, h, w = x.shape
    if shift:
        padded = nn.functional.pad(x, (shift, shift, shift, shift))
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(n, c, h, w)
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(n, c, h, w)
        x = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    binary = torch.rand(n, generator=generator) < binarised
    draw = torch.bernoulli(x, generator=generator)
    return torch.where(binary[:, None, None, None], draw, x)


def accuracy(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """The fraction of ``images`` classified as ``labels`` (eval mode, no gradients)."""
    was_training = net.training
    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            correct += (net(images[i : i + batch_size]).argmax(1).cpu() == labels[i : i + batch_size]).sum().item()
    net.train(was_training)
    return correct / len(images)


def train_classifier(name: str, images: torch.Tensor, labels: torch.Tensor, *, epochs: int, batch_size: int = 128,
                     lr: float = 1e-3, shift: int = 2, binarised: float = 0.5, seed: int = 0,
                     log: Any = print) -> FeatureNet:
    """Train a fresh :class:`FeatureNet` ``name`` on uint8 ``images`` with class ``labels``: Adam at ``lr`` with a
    cosine decay to 0 over ``epochs`` epochs, cross-entropy, random shifts of up to ``shift`` pixels and a
    Bernoulli draw of a fraction ``binarised`` of each batch; everything seeded with ``seed``. Returns the net in
    eval mode."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = FeatureNet(name)
    x = net.prepare(images)
    labels = torch.as_tensor(labels).long()
    steps = epochs * math.ceil(len(x) / batch_size)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            loss = nn.functional.cross_entropy(net(_augment(x[idx], shift, binarised, generator)), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(idx)
        log(f"epoch {epoch + 1}/{epochs}: train loss {total / len(x):.4f}")
    return net.eval()


#: :func:`train_classifier`'s settings per network: 8×8 digits shifted by 2 pixels lose too much, and a Bernoulli
#: draw of an 8×8 grey digit too (the digits are grey in vaelab's default runs; binarised MNIST is the literature's);
#: the coloured shapes are 0 or 255 in every channel already (a Bernoulli draw changes nothing), and the grid of
#: positions covers the image, so a 1-pixel shift only blurs the position factor a little
TRAINING: dict[str, dict[str, Any]] = {
    "mnist": {"epochs": 8, "shift": 2, "binarised": 0.5},
    "digits": {"epochs": 60, "shift": 1, "binarised": 0.25},
    "shapes_color": {"epochs": 4, "shift": 1, "binarised": 0.0, "batch_size": 64, "lr": 2e-3},
}


def shape_color_class(factors: torch.Tensor, n_colors: int) -> torch.Tensor:
    """The class the ``shapes_color`` network is trained to tell, of ``(N, 6)`` factor labels: shape · n_colors +
    colour (shape in column 0, colour in the last)."""
    return factors[:, 0] * n_colors + factors[:, -1]


#: the data set's settings in ``conf/data/shapes_color.yaml`` (tests/test_colour.py checks they agree)
SHAPES_COLOR_SETTINGS = {"image_size": 32, "n_scales": 4, "n_orientations": 10, "n_positions": 8, "n_colors": 6,
                         "test_fraction": 0.1, "val_fraction": 0.1, "split_seed": 42}


def _splits(name: str, data_dir: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The data a network trains and is tested on, as vaelab's DataModules split it: MNIST's 60,000 training
    images (``val_fraction=0``) and its 10,000 test images; the digits' train / val / test splits (1,293 / 144 /
    360, the data set's defaults); shapes_color's (``conf/data/shapes_color.yaml``'s settings, rendered here:
    37,319 / 4,146 / 4,615), labelled by :func:`shape_color_class`."""
    if name == "mnist":
        from vaelab.data import MNISTDataModule

        datamodule = MNISTDataModule(data_dir=data_dir, val_fraction=0.0, download=False, cache=False)
    elif name == "shapes_color":
        from vaelab.data.shapes import ColorShapesDataModule

        datamodule = ColorShapesDataModule(data_dir=data_dir, cache=False, **SHAPES_COLOR_SETTINGS)
        datamodule.setup()
        return {k: (images, shape_color_class(labels, datamodule.n_colors))
                for k, (images, labels) in datamodule.splits.items() if len(images)}
    else:
        from vaelab.data import DigitsDataModule

        datamodule = DigitsDataModule(data_dir=data_dir, cache=False)
    datamodule.prepare_data()
    datamodule.setup()
    return {k: v for k, v in datamodule.splits.items() if len(v[0])}


def make_feature_net(name: str, data_dir: str | Path = "data", out: str | Path | None = None, *,
                     epochs: int | None = None, seed: int = 0, log: Any = print) -> dict[str, Any]:
    """Train feature network ``name`` on its data (:func:`_splits`), save its weights to ``out`` (default: the
    shipped file) and return what to record: accuracies on every split held out from training (grey levels, and a
    fixed Bernoulli draw of the test images), the file, its size and its SHA-256."""
    if name not in FEATURE_NETS:
        raise ValueError(f"unknown feature network {name!r}: choose one of {sorted(FEATURE_NETS)}")
    splits = _splits(name, data_dir)
    settings = {**TRAINING[name], **({} if epochs is None else {"epochs": int(epochs)})}
    net = train_classifier(name, *splits["train"], **settings, seed=seed, log=log)
    report: dict[str, Any] = {"name": name, **settings, "seed": seed,
                              "parameters": sum(p.numel() for p in net.parameters())}
    for split, (images, labels) in splits.items():
        report[f"{split}_accuracy"] = accuracy(net, images, labels)
    test_images, test_labels = splits["test"]
    if FEATURE_NETS[name].channels == 1:  # (a Bernoulli draw of 0/255 colour images is the images themselves)
        draw = torch.bernoulli(test_images.float() / 255.0, generator=torch.Generator().manual_seed(1234))
        report["test_accuracy_binarised"] = accuracy(net, draw, test_labels)
    path = Path(out) if out is not None else FEATURE_NETS[name].path
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    report.update(file=str(path), bytes=path.stat().st_size, sha256=sha256_of(path))
    return report
