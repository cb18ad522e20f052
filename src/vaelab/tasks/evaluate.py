"""The evaluation task behind ``src/eval.py``: a checkpoint in, a table and ``metrics.json`` out."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from vaelab.errors import ConfigError
from vaelab.metrics.factors import disentanglement_metrics, has_factors
from vaelab.metrics.likelihood import comparability_notes, evaluate
from vaelab.metrics.representation import representation_scores
from vaelab.metrics.sample_quality import UNAVAILABLE, sample_scores_or_reason
from vaelab.models import Autoencoder
from vaelab.models.checkpoint import model_from_checkpoint
from vaelab.models.samplers import check_fits_data
from vaelab.record import COMPLETED, RECORD_FILE, RUNNING, STATUS, TERMINATED
from vaelab.rules import EVAL_KEYS, validate_config
from vaelab.tasks.hydra_job import command_line_overrides
from vaelab.tasks.recording import recorded
from vaelab.tasks.signals import Terminated, sigterm_raises
from vaelab.trust import config_targets, read_checkpoint

log = logging.getLogger(__name__)

# Decode at most about this many output values at once in the importance-weighted bound (8 MB in float32): chunks
# whose activations stay near the cache are faster than larger ones (scripts/eval_roofline.py).
IW_BUDGET = 2**21

UNITS = {
    "neg_elbo": "nats/image  (−ELBO = recon + KL)",
    "recon": "nats/image  (−log p(x|z), one z per image)",
    "kl": "nats/image  (KL(q(z|x) ‖ p(z)))",
    "bits_per_dim": "bits/dim    (−ELBO)",
    "neg_iw_bound": "nats/image  (−L_K, Burda et al. 2016: ≥ −log p(x))",
    "iw_bits_per_dim": "bits/dim    (−L_K)",
    "iw_k": "importance samples K",
    "active_units": "latent units with Cov_x(E_q[z]) > 0.01",
    "mse": "per-pixel mean squared error of the reconstruction",
    # data with ground-truth factors only (data=shapes): vaelab.metrics.factors, all in [0, 1], higher is better
    "mig": "mutual information gap of μ (Chen et al. 2018)",
    "factor_vae": "FactorVAE score (Kim & Mnih 2018; over all factors)",
    "sap": "SAP score of μ (Kumar et al. 2018)",
    "dci_disentanglement": "DCI disentanglement of μ (Eastwood & Williams 2018)",
    "dci_completeness": "DCI completeness of μ",
    "dci_informativeness": "DCI informativeness (factor accuracy from μ)",
    # data with labels: vaelab.metrics.representation (fitted on the training codes)
    "linear_probe": "accuracy of a logistic regression on the code",
    "knn": "accuracy of a 5-nearest-neighbour vote on the code",
    "nmi": "NMI of a k-means clustering of the code with the classes",
    "ari": "ARI of that clustering",
    # MNIST-sized and 8×8 digits: vaelab.metrics.sample_quality (a digit classifier's features, not Inception's)
    "fcd": "Fréchet classifier distance of samples to the split (0: equal)",
    "precision": "samples inside the split's manifold (Kynkäänniemi et al. 2019)",
    "recall": "split images inside the samples' manifold",
    "num_images": "images",
}


#: data settings that say where files are written: taken from this config, never from a checkpoint (vaelab.trust)
WRITE_KEYS = ("download", "cache_dir")


def iw_chunk_size(batch_size: int, image_shape: tuple[int, ...]) -> int:
    """Importance samples decoded at a time for batches of ``batch_size`` images: as many as keep the decoder's
    output within :data:`IW_BUDGET` values."""
    return max(1, IW_BUDGET // (int(batch_size) * math.prod(image_shape)))


def resolve_device(name: str) -> torch.device:
    """``device=auto|cpu|cuda|cuda:<n>`` as a torch device; a CUDA device this machine does not have is refused
    here, before the checkpoint is read (so a good checkpoint is not blamed for it)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name}: CUDA is not available on this machine (no CUDA GPU, or a PyTorch built "
                              "without CUDA): give device=cpu, or device=auto to take a GPU when there is one")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device={name}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered "
                              f"from 0: give device=cuda:0 … cuda:{torch.cuda.device_count() - 1}, or device=auto")
    return device


def load(cfg: DictConfig) -> tuple[Autoencoder, Any, dict[str, Any]]:
    """The pure model (its hyperparameters and weights from the checkpoint, no objective) and the data set:
    ``cfg.data`` if given, else the one the checkpoint was trained on."""
    path = Path(str(cfg.ckpt_path)) if cfg.get("ckpt_path") else None
    if path is None or not path.is_file():
        raise ConfigError(f"ckpt_path = {cfg.get('ckpt_path')!r} is invalid: it must be an existing checkpoint file, "
                          "e.g. ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt")
    device = resolve_device(cfg.device)
    # the one trusted loader: one message for an empty, damaged, foreign or diverged file; settings plain, with no
    # interpolation, naming only vaelab's classes, torch's optimisers and what this config names
    allowed = config_targets(cfg)
    checkpoint = read_checkpoint(path, trusted_targets=allowed)
    try:
        model = model_from_checkpoint(checkpoint, map_location=device, trusted_targets=allowed)
    except Exception as err:  # a checkpoint of vaelab's model that this version cannot rebuild
        first = (str(err).splitlines() or [""])[0][:300]
        raise ConfigError(f"ckpt_path={path} is not a usable checkpoint: its model cannot be rebuilt from it "
                          f"({type(err).__name__}: {first})") from None
    data = data_config(cfg.get("data"), checkpoint.get("vaelab_data"), path, command_line_overrides(),
                       local_data_dir=cfg.paths.get("data_dir"))
    datamodule = instantiate(data)
    if tuple(datamodule.image_shape) != tuple(model.image_shape):
        raise ConfigError(
            f"data has images of shape {tuple(datamodule.image_shape)} but the model was trained on "
            f"{tuple(model.image_shape)}: choose matching data with data=<name>"
        )
    return model, datamodule, checkpoint


def data_config(
    chosen: DictConfig | None, stored: dict[str, Any] | None, path: Path, overrides: list[str],
    local_data_dir: str | None = None,
) -> DictConfig:
    """The data to evaluate on: the checkpoint's own (``stored``), unless ``data=<name>`` chose another data set.

    Choosing the same data set again (e.g. ``data=mnist data.batch_size=500``) changes only the ``data.…`` keys in
    ``overrides`` (the command line's), and keys given without a group (``+data.data_dir=/here``) change just
    those: the split, binarisation and seeds the model was trained and scored with stay the checkpoint's rather
    than silently becoming a group's defaults, and a log line names each kept value that differs from the group's.
    A stored ``data_dir`` that does not exist here (a checkpoint from another machine) gives way to the chosen
    group's, or to ``local_data_dir``. Where to write (:data:`WRITE_KEYS`: a download, the cache folder) is never
    taken from the checkpoint: this config's, or the data set's defaults.
    """
    if chosen and "_target_" in chosen:
        if stored is None or get_class(stored["_target_"]) is not get_class(chosen._target_):
            return chosen
    if stored is None:
        raise ConfigError(f"{path} does not say which data it was trained on: choose one with data=<name>")
    # (where to write is never the file's to say: its download and cache folder settings are dropped)
    merged = OmegaConf.create({k: v for k, v in stored.items() if k not in WRITE_KEYS})
    if chosen and "_target_" not in chosen:  # only keys, no group: every one of them was given
        given = {str(k) for k in chosen}
        merged = OmegaConf.merge(merged, chosen)
    else:
        given = set()
        for override in overrides:
            key = override.lstrip("+").split("=", 1)[0]
            if key.startswith("data."):  # (a deletion, ~data.key, keeps the checkpoint's value)
                given.add(key.removeprefix("data."))
                OmegaConf.update(merged, key.removeprefix("data."), OmegaConf.select(chosen, key.removeprefix("data.")))
    for key in WRITE_KEYS:
        if chosen and key in chosen and key not in given:
            merged[key] = chosen[key]
    local = chosen.get("data_dir") if chosen else None
    local = local or local_data_dir
    if "data_dir" not in given and local is not None and not Path(str(merged.get("data_dir", "."))).exists():
        log.info("%s was trained on data in %s, which is not here: using %s", path, merged.data_dir, local)
        merged.data_dir = local
        given.add("data_dir")
    if chosen and "_target_" in chosen:
        kept = [f"{k}={merged[k]!r} (the data group has {chosen[k]!r})"
                for k in chosen if k not in given and k != "_target_" and k in merged and merged[k] != chosen[k]]
        if kept:
            log.warning("Evaluating with the checkpoint's data settings: %s. Give data.<key>=… to change one.",
                        ", ".join(kept))
    return merged


def format_table(metrics: dict[str, Any], title: str) -> str:
    lines = [title, "-" * len(title)]
    for key, unit in UNITS.items():
        value = metrics.get(key)
        if value is None:
            continue
        shown = f"{value:12.4f}" if isinstance(value, float) else f"{value:12d}"
        lines.append(f"{key:<20}{shown}  {unit}")
    return "\n".join(lines)


def run_evaluation(cfg: DictConfig) -> float | None:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.split``; print a table; write ``metrics.json``; return the −ELBO."""
    record: dict[str, Any] = {STATUS: RUNNING, "ckpt_path": str(cfg.get("ckpt_path")), "split": cfg.split}
    with recorded(Path(cfg.paths.output_dir) / RECORD_FILE, record), sigterm_raises():
        try:
            return _evaluate(cfg, record)
        except Terminated:
            record.update(status=TERMINATED, error="terminated by SIGTERM while evaluating")
            log.error("Terminated by SIGTERM while evaluating %s: nothing was computed to the end", cfg.ckpt_path)
            raise


def _evaluate(cfg: DictConfig, record: dict[str, Any]) -> float | None:
    """The evaluation itself (see :func:`run_evaluation`), filling in ``record``."""
    validate_config(cfg, EVAL_KEYS)
    model, datamodule, checkpoint = load(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed)
    datamodule.prepare_data()
    datamodule.setup("test")
    sampler = instantiate(cfg.sampler) if cfg.get("sampler") and cfg.get("sample_quality") is not None else None
    check_fits_data(sampler, datamodule)  # (e.g. more mixture components than codes: refused before any computing)
    batches = datamodule.evaluation_batches(cfg.split)
    notes = comparability_notes(model.likelihood.name, datamodule.hparams.get("binarize", "none"),
                                datamodule.binary_images)
    chunk = cfg.get("iw_chunk_size") or iw_chunk_size(datamodule.eval_batch_size, model.image_shape)
    metrics = evaluate(model, batches, k=cfg.iw_k, chunk_size=chunk,
                       class_labels=getattr(datamodule, "class_labels", None))
    if has_factors(datamodule):  # the same scores as callbacks.disentanglement logs while training
        options = cfg.get("disentanglement")
        options = OmegaConf.to_container(options, resolve=True) if options is not None else {}
        metrics.update(disentanglement_metrics(model, datamodule, cfg.split, **options))
    options = cfg.get("representation")
    if options is not None:  # is the code a good feature: fitted on the training codes, scored on the split
        options = OmegaConf.to_container(options, resolve=True)
        metrics.update(representation_scores(model, datamodule, cfg.split, fit_split="train", **options))
    options = cfg.get("sample_quality")
    if options is not None:  # are the samples good (MNIST-sized and 8×8 digits: a classifier trained here)
        options = OmegaConf.to_container(options, resolve=True)
        # (a missing or damaged feature-network file: one warning, these scores marked unavailable, the rest kept)
        scores, unavailable = sample_scores_or_reason(model, datamodule, cfg.split, sampler=sampler, **options)
        metrics.update(scores)
        if scores:
            record["sampler"] = type(sampler).__name__ if sampler is not None else "the code's prior"
        if unavailable:
            record[UNAVAILABLE] = unavailable
    record.update(
        data=type(datamodule).__name__,
        global_step=checkpoint.get("global_step"),
        notes=notes,
        epoch=checkpoint.get("epoch"),
        **{cfg.split: {f"{cfg.split}/{k}": v for k, v in metrics.items()}},
        status=COMPLETED,
    )
    print(format_table(metrics, f"{cfg.ckpt_path} on the {cfg.split} split of {type(datamodule).__name__}"))
    for note in notes:
        print(f"Note: {note}")
    return metrics["neg_elbo"]
