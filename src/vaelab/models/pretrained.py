"""Sharing a trained model: a folder of three files, on disk or on the Hugging Face Hub.

``model.save_pretrained(folder)`` (:func:`save_pretrained`) writes

- ``model.safetensors``: the weights only, with ``safetensors.torch.save_file`` (a JSON header of names, dtypes and
  shapes, then the raw bytes: reading it back runs no code, unlike a pickle);
- ``config.json``: ``{"format": "vaelab-pretrained", "format_version": 1, "model": <the model's settings: its
  constructor arguments, as models.checkpoint.model_config takes them from a checkpoint>, "provenance": <where it
  came from, or null>}``, plain JSON;
- ``README.md``: a model card (a Hugging Face model card: YAML metadata, then Markdown) with the model's family, its
  data, its run's test metrics, the command that trained it and its licence, each said to be unknown where it is.

The model knows its settings itself; what it was trained on and how, it knows only when ``vaelab.load`` built it
from a checkpoint in a run folder (:func:`provenance`) or from such a folder. ``vaelab.load(folder)`` reads the folder
back through the one trusted loader (:func:`vaelab.trust.read_model_folder`), and ``vaelab.load("hf://owner/name")``
first fetches those three files with ``huggingface_hub.snapshot_download`` (:func:`hub_folder`).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vaelab.errors import ConfigError
from vaelab.record import read_record
from vaelab.trust import CARD_FILE, CONFIG_FILE, FOLDER_FORMAT, FOLDER_FORMAT_VERSION, WEIGHTS_FILE, plain_settings

if TYPE_CHECKING:
    from vaelab.models.autoencoder import Autoencoder

#: the files a model folder holds (and all that is fetched of a Hub repository)
FOLDER_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)
#: the address of a model on the Hugging Face Hub: ``hf://<owner>/<name>[@<revision>]``
HUB_SCHEME = "hf://"
HUB_ADDRESS = re.compile(r"hf://(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[^\s@]+))?")
#: the data settings that are paths of the machine that trained it: not shared
LOCAL_DATA_KEYS = ("data_dir", "cache_dir", "folder")
#: the card fields that fill in (or replace) what the model's provenance says; any other field is card metadata
CARD_TEXT_FIELDS = ("title", "description")
PROVENANCE_FIELDS = ("data", "command", "test_metrics")
#: the training entry point the card's command names
TRAIN_COMMAND = "python src/train.py"


# -------------------------------------------------------------------------------------- where a model came from
def provenance(path: str | Path, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What the checkpoint ``path`` (read by :func:`vaelab.trust.read_checkpoint`) says of how its model was
    trained, for a model card: its objective and β, its data settings (``vaelab_data``, local paths left out), its
    epoch and step, and, when it lies in a run folder (``<run>/checkpoints/<file>.ckpt``), the run's test metrics
    (``metrics.json``, :func:`vaelab.record.read_record`) and command-line overrides (``<run>/.hydra/overrides.yaml``,
    else the record's). What is not there is None; what is there but unreadable is said in ``notes``."""
    path = Path(path)
    hparams = checkpoint.get("hyper_parameters") or {}
    info: dict[str, Any] = {
        "checkpoint": path.name, "run": None, "objective": hparams.get("objective"), "beta": hparams.get("beta"),
        "data": shareable_data(checkpoint.get("vaelab_data")), "epoch": checkpoint.get("epoch"),
        "global_step": checkpoint.get("global_step"), "test_metrics": None, "test_checkpoint": None,
        "overrides": None, "command": None, "notes": [],
    }
    if path.parent.name != "checkpoints":
        info["notes"].append(f"the checkpoint {path.name} was not in a run folder's checkpoints/: the run's record and "
                             "command were not found")
        return info
    run = path.parent.parent
    info["run"] = run.name
    info["checkpoint"] = f"checkpoints/{path.name}"
    record = read_record(run) or {}
    if isinstance(record.get("test"), dict) and record["test"]:
        info["test_metrics"] = dict(record["test"])
        tested = str(record.get("test_ckpt") or "")
        info["test_checkpoint"] = f"checkpoints/{Path(tested).name}" if tested.endswith(".ckpt") else tested or None
    info["overrides"], note = run_overrides(run, record)
    if note:
        info["notes"].append(note)
    if info["overrides"] is not None:
        info["command"] = " ".join([TRAIN_COMMAND, *map(shlex.quote, info["overrides"])])
    return info


def run_overrides(run: Path, record: dict[str, Any]) -> tuple[list[str] | None, str | None]:
    """The command-line overrides of the run in ``run``: Hydra's ``.hydra/overrides.yaml`` (``yaml.safe_load``),
    else the record's ``overrides``; None where neither is there. The second value says what could not be read."""
    import yaml

    file = run / ".hydra" / "overrides.yaml"
    note = None
    if file.is_file():
        try:
            overrides = yaml.safe_load(file.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            overrides = None
        if isinstance(overrides, list) and all(isinstance(o, str) for o in overrides):
            return overrides, None
        note = "the run's .hydra/overrides.yaml is not a YAML list of overrides"
    overrides = record.get("overrides")
    if isinstance(overrides, list) and all(isinstance(o, str) for o in overrides):
        return overrides, note
    return None, note


def shareable_data(data: Any) -> Any:
    """The data settings without the paths of the machine that trained the model (:data:`LOCAL_DATA_KEYS`)."""
    if not isinstance(data, dict):
        return data
    return {k: v for k, v in data.items() if k not in LOCAL_DATA_KEYS}


# ------------------------------------------------------------------------------------------------ the weights
def _storage(tensor: torch.Tensor) -> tuple[str, int]:
    return str(tensor.device), tensor.untyped_storage().data_ptr()


def weights_for_file(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` as ``safetensors.torch.save_file`` takes it: it writes only dense, contiguous tensors, and
    refuses tensors that share memory (tied weights, views of one buffer: "Some tensors share memory", see
    https://huggingface.co/docs/safetensors/torch_shared_tensors). So every tensor is detached, moved to the CPU and
    made contiguous, and one whose storage another entry shares is cloned: each name keeps its own copy of its
    values, which ``load_state_dict`` copies back into the model (where a model ties them, it ties them again)."""
    shared = Counter(_storage(t) for t in state_dict.values() if t.untyped_storage().nbytes())
    out = {}
    for name, tensor in state_dict.items():
        own = tensor.detach().to("cpu").contiguous()
        if shared[_storage(tensor)] > 1 and own.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr():
            own = own.clone()
        out[name] = own
    return out


# ---------------------------------------------------------------------------------------------------- writing
def save_pretrained(model: Autoencoder, folder: str | Path, license: str | None = None, **card_fields: Any) -> Path:
    """Write ``model`` to ``folder`` (made if needed) as :data:`FOLDER_FILES` (see the module) and return it.

    ``license``: the licence of the weights (a Hugging Face licence id such as ``mit`` or ``cc-by-4.0``); unknown
    when not given, and the card says so. ``card_fields``: ``title`` and ``description`` (text of the card);
    ``data``, ``command`` and ``test_metrics`` fill in or replace what the model's provenance says (for a model that
    did not come from a run folder); any other field is written to the card's metadata (e.g. ``tags``,
    ``datasets``). Nothing is written when ``config.json`` would not load back (a setting that is not a plain value,
    or holds ``${``): one :class:`ConfigError` names it."""
    folder = Path(folder)
    origin = _provenance_with(model.provenance, card_fields)
    config = {"format": FOLDER_FORMAT, "format_version": FOLDER_FORMAT_VERSION,
              "model": {**model.config, "compile": False}, "provenance": origin}
    try:
        config = plain_settings(config, str(folder / CONFIG_FILE))
    except ConfigError as err:
        raise ConfigError(f"Not written: {err}. vaelab.load would refuse such a {CONFIG_FILE}; give that value as "
                          "a plain one (a card field such as command=… or data=… replaces the provenance's)") from None
    card = model_card(config, license, card_fields)
    weights = weights_for_file(model.state_dict())
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / WEIGHTS_FILE, lambda tmp: _save_safetensors(weights, tmp))
    _write(folder / CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8"))
    _write(folder / CARD_FILE, lambda tmp: tmp.write_text(card, encoding="utf-8"))
    return folder


def _save_safetensors(weights: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(weights, path, metadata={"format": "pt"})  # ("pt": what the Hub's tools read as PyTorch weights)
    mask = os.umask(0)  # safetensors makes its file private (0600); give it the mode of any other new file
    os.umask(mask)
    path.chmod(0o666 & ~mask)


def _write(path: Path, write: Any) -> None:
    """``write(tmp)`` into a temporary file beside ``path``, then renamed onto it: no half-written file is left."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _provenance_with(origin: dict[str, Any] | None, fields: dict[str, Any]) -> dict[str, Any] | None:
    """The model's provenance with the card fields that fill it in (:data:`PROVENANCE_FIELDS`) put in."""
    given = {k: fields[k] for k in PROVENANCE_FIELDS if fields.get(k) is not None}
    if origin is None and not given:
        return None
    origin = copy.deepcopy(origin or {})
    if "command" in given:
        origin["overrides"] = None
    origin.update(given)
    return origin


# ------------------------------------------------------------------------------------------------- the card
def _name(target: Any) -> str:
    """``vaelab.models.objectives.Elbo`` → ``Elbo``; anything else as it is."""
    return str(target).rsplit(".", 1)[-1]


def _settings(config: Any, skip: tuple[str, ...] = ("_target_",)) -> str:
    if not isinstance(config, dict):
        return ""
    items = [f"{k}={json.dumps(v)}" for k, v in config.items() if k not in skip]
    return f" ({', '.join(items)})" if items else ""


def _family(model: dict[str, Any], origin: dict[str, Any]) -> list[str]:
    objective = origin.get("objective")
    if isinstance(objective, dict) and objective.get("_target_"):
        beta = "" if origin.get("beta") is None else f", β = {origin['beta']}"
        trained = f"`{_name(objective['_target_'])}`{_settings(objective)}{beta}"
    else:
        trained = "unknown (the model was not loaded from a checkpoint, and no objective was recorded)"
    code = model.get("code") or {"_target_": "vaelab.models.codes.GaussianCode"}
    net = model.get("net") or {}
    lines = [f"- objective: {trained}", f"- code: `{_name(code.get('_target_'))}`{_settings(code)}"]
    for part in ("encoder", "decoder"):
        if isinstance(net.get(part), dict):
            lines.append(f"- {part}: `{_name(net[part].get('_target_'))}`{_settings(net[part])}")
    lines += [f"- latent size: {model.get('latent_dim')}; images: {model.get('image_shape')} (channels, height, width)",
              f"- likelihood p(x|z): {model.get('likelihood', 'bernoulli')}"]
    if model.get("corruption"):
        lines.append(f"- input corruption (denoising): `{_name(model['corruption'].get('_target_'))}`"
                     f"{_settings(model['corruption'])}")
    return lines


def _data(origin: dict[str, Any]) -> list[str]:
    data = origin.get("data")
    if isinstance(data, dict) and data.get("_target_"):
        return [f"`{data['_target_']}`{_settings(data)} (local paths left out)"]
    if data:
        return [str(data)]
    return ["Unknown: the model was not loaded from a checkpoint that recorded its data, and no `data=` was given "
            "to save_pretrained."]


def _metrics(origin: dict[str, Any]) -> list[str]:
    metrics = origin.get("test_metrics")
    if not isinstance(metrics, dict) or not metrics:
        return ["Unknown: no test metrics were recorded (the run did not test, or the model did not come from a run "
                "folder with its metrics.json), and no `test_metrics=` was given to save_pretrained."]
    lines = ["| metric | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in metrics.items())]
    tested, shared = origin.get("test_checkpoint"), origin.get("checkpoint")
    if tested:
        run = f" of run `{origin['run']}`" if origin.get("run") else ""
        lines.append(f"\nMeasured on `{tested}`{run} (the run's test split).")
        if shared and tested != shared:
            lines.append(f"These weights are `{shared}`, not the tested checkpoint: the metrics are the run's, not "
                         "these weights' own. Evaluate them with `src/eval.py` for their own numbers.")
    return lines


def _command(origin: dict[str, Any]) -> list[str]:
    if not origin.get("command"):
        return ["Unknown: the run's command-line overrides were not found (no `.hydra/overrides.yaml` or record in "
                "its run folder), and no `command=` was given to save_pretrained."]
    return ["```bash", str(origin["command"]), "```"]


def _front_matter(license: str | None, origin: dict[str, Any], fields: dict[str, Any]) -> str:
    """The card's metadata (YAML between ``---`` lines, as the Hub reads it): library, licence, tags, and the card
    fields that are not text or provenance."""
    import yaml

    extra = {k: v for k, v in fields.items() if k not in (*CARD_TEXT_FIELDS, *PROVENANCE_FIELDS)}
    objective = origin.get("objective") if isinstance(origin.get("objective"), dict) else {}
    tags = ["vaelab", "autoencoder", *([_name(objective["_target_"])] if objective.get("_target_") else [])]
    given = extra.pop("tags", None) or []
    tags += [t for t in ([given] if isinstance(given, str) else given) if t not in tags]
    meta = {"library_name": "vaelab", "license": license or "unknown", "tags": tags, **extra}
    try:
        return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"
    except yaml.YAMLError as err:
        raise ConfigError(f"A card field of save_pretrained is not a plain value (text, number, list, mapping): "
                          f"{str(err).splitlines()[0]}") from None


def model_card(config: dict[str, Any], license: str | None, fields: dict[str, Any]) -> str:
    """The ``README.md`` of a model folder: metadata, then the model's family, data, test metrics, training command,
    licence, and how to load it; each part the model does not know is said to be unknown."""
    origin = config.get("provenance") or {}
    model = config["model"]
    objective = (origin.get("objective") or {}).get("_target_")
    title = fields.get("title") or "vaelab autoencoder" + (f": {_name(objective)}" if objective else "")
    licence = (f"`{license}`" if license else "Unknown: no licence was given (`save_pretrained(folder, "
                                               "license=\"mit\")`). Ask the author before reusing these weights.")
    lines = [_front_matter(license, origin, fields), f"# {title}", ""]
    if fields.get("description"):
        lines += [str(fields["description"]), ""]
    lines += ["A trained vaelab autoencoder (`vaelab.models.Autoencoder`: encode, decode, "
              "reconstruct, sample, embed).", "", "## Family", "", *_family(model, origin), "", "## Data", "",
              *_data(origin), "", "## Test metrics", "", *_metrics(origin), "", "## Training command", "",
              *_command(origin), "", "## Licence", "", licence, ""]
    if origin.get("notes"):
        lines += ["## Notes", "", *(f"- {note}" for note in origin["notes"]), ""]
    lines += ["## Use", "", "```python", "import vaelab", "", "model = vaelab.load(\"hf://<owner>/<name>\")  "
              "# or vaelab.load(\"<this folder>\")", "x_hat = model.reconstruct(x)", "```", "",
              f"`{WEIGHTS_FILE}` holds the weights (safetensors: no pickle), `{CONFIG_FILE}` the settings "
              f"(format `{FOLDER_FORMAT}` version {FOLDER_FORMAT_VERSION}); vaelab reads the settings through the "
              "same checks as a checkpoint's, so only vaelab's own classes are built from them.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- the Hub
def hub_address(address: str) -> tuple[str, str | None]:
    """``hf://owner/name[@revision]`` → ``("owner/name", revision or None)``, or one ConfigError saying the form."""
    match = HUB_ADDRESS.fullmatch(address)
    if not match:
        raise ConfigError(f"{address!r} is not a Hugging Face Hub model address: it must be hf://<owner>/<name> or "
                          "hf://<owner>/<name>@<revision> (a branch, tag or commit)")
    return match["repo"], match["revision"]


def hub_folder(address: str, cache_dir: str | Path | None = None) -> Path:
    """The local folder of the Hub model ``address`` (``hf://owner/name[@revision]``): only :data:`FOLDER_FILES`
    fetched by ``huggingface_hub.snapshot_download(repo_id, revision=…, allow_patterns=…, cache_dir=…)`` into the Hub
    cache (``cache_dir``, default ``HF_HUB_CACHE``), downloaded when online and taken from the cache offline
    (``HF_HUB_OFFLINE=1``, or no connection). Each way it can fail is one ConfigError naming the address."""
    repo_id, revision = hub_address(address)
    try:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.utils import (  # (where every version since 0.2x exports them)
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        raise ConfigError(f"{address}: loading a model from the Hugging Face Hub needs huggingface_hub "
                          "(pip install huggingface_hub)") from None
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                      allow_patterns=list(FOLDER_FILES), library_name="vaelab"))
    except LocalEntryNotFoundError as err:
        cache = cache_dir or constants.HF_HUB_CACHE
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hub could not be reached"
        first = (str(err).splitlines() or [""])[0][:200]
        raise ConfigError(f"{address} is not in the Hugging Face cache {cache}, and {why} ({first}). Load it once "
                          "online (without HF_HUB_OFFLINE=1) to cache it, or give the cache that holds it "
                          "(HF_HUB_CACHE or cache_dir=…), or a folder saved with model.save_pretrained") from None
    except RevisionNotFoundError:
        raise ConfigError(f"{address}: the Hub repository {repo_id} has no revision {revision!r} (a branch, tag or "
                          "commit)") from None
    except RepositoryNotFoundError:
        raise ConfigError(f"{address}: there is no model repository {repo_id} on the Hub, or it is private or gated "
                          "(log in with `hf auth login`, or set HF_TOKEN)") from None
    except HfHubHTTPError as err:
        raise ConfigError(f"{address}: the Hub refused the download ({str(err).splitlines()[0][:200]})") from None
