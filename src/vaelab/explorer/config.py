"""The explorer's settings: ``key=value`` arguments, as the other commands take them, over :data:`DEFAULTS`.

No Hydra composition (the explorer makes no run folder and has no config groups): the arguments are OmegaConf
dot-list entries, so ``ckpt_path=…``, ``port=7861``, ``data.data_dir=/elsewhere`` and ``gmm.n_components=5`` read
as they would for ``vaelab-eval``. The keys the model and data are read with (``ckpt_path``, ``device``, ``data``,
``paths``, ``trusted_targets``) mean what they mean in ``conf/eval.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vaelab.errors import ConfigError

#: every setting, with its default
DEFAULTS: dict[str, Any] = {
    # a checkpoint file, a model folder (model.save_pretrained) or hf://<owner>/<name>
    "ckpt_path": None,
    # where the page is served: 127.0.0.1 (this machine only) unless you ask for another interface
    "server_name": "127.0.0.1",
    # null: the first free port from 7860 (Gradio's choice)
    "port": None,
    # a public *.gradio.live link through Gradio's relay: off unless asked for
    "share": False,
    # auto | cpu | cuda | cuda:<index>
    "device": "cpu",
    # data.<key>=… changes one of the checkpoint's data settings (e.g. data.data_dir=/where/it/is here)
    "data": None,
    "paths": {"root_dir": "${oc.env:VAELAB_ROOT,.}", "data_dir": "${paths.root_dir}/data/"},
    # classes of your own that a checkpoint you trust names (as in conf/eval.yaml)
    "trusted_targets": [],
    # the sliders walk code ± span units: the prior's standard deviation, or an AE dimension's spread over the data
    "span": 3.0,
    # at most this many sliders (the first dimensions); the others keep the image's code
    "max_sliders": 64,
    # images in the interpolation strip (both ends included) and in a traversal strip
    "steps": 8,
    # samples per click
    "num_samples": 16,
    # the Gaussian mixture sampler, fitted on model.embed of the first fit_images training images (conf/sampler/gmm)
    "gmm": {"n_components": 10, "covariance_type": "full", "fit_images": 10000, "seed": 0},
}

#: what each numeric setting must be, for one message naming it
POSITIVE_INTS = ("max_sliders", "steps", "num_samples", "gmm.n_components", "gmm.fit_images")


def parse(argv: Sequence[str]) -> DictConfig:
    """The settings from ``argv`` (``key=value`` each) over :data:`DEFAULTS`, interpolations resolved. A word that
    is not ``key=value``, an unknown key, a missing ``ckpt_path`` or a bad number is one :class:`ConfigError`."""
    words = [w.removeprefix("+") for w in argv]
    loose = [w for w in words if "=" not in w or w.startswith("=")]
    if loose:
        raise ConfigError(f"vaelab-explore takes key=value arguments, not {' '.join(loose)!r}: e.g. "
                          "vaelab-explore ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt port=7861")
    given = OmegaConf.from_dotlist(words)
    unknown = sorted(k for k in given if k not in DEFAULTS)
    if unknown:
        raise ConfigError(f"vaelab-explore has no setting {', '.join(unknown)}: its settings are "
                          f"{', '.join(DEFAULTS)}")
    cfg = OmegaConf.merge(OmegaConf.create(DEFAULTS), given)
    OmegaConf.resolve(cfg)
    check(cfg)
    return cfg


def check(cfg: DictConfig) -> None:
    """One :class:`ConfigError` for the first setting that cannot be used."""
    if not cfg.ckpt_path:
        raise ConfigError("ckpt_path is missing: give the model to explore, ckpt_path=<checkpoint file>, "
                          "ckpt_path=<model folder> or ckpt_path=hf://<owner>/<name>")
    for key in POSITIVE_INTS:
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{key}={value!r} is invalid: it must be a whole number >= 1")
    if cfg.port is not None and (not isinstance(cfg.port, int) or not 0 < cfg.port < 65536):
        raise ConfigError(f"port={cfg.port!r} is invalid: it must be a TCP port, 1 … 65535 (or null: the first free "
                          "one from 7860)")
    if not isinstance(cfg.span, (int, float)) or cfg.span <= 0:
        raise ConfigError(f"span={cfg.span!r} is invalid: it must be a number > 0")
    if not isinstance(cfg.share, bool):
        raise ConfigError(f"share={cfg.share!r} is invalid: it must be true or false")
