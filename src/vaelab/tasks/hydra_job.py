"""What a task needs to know about the Hydra job it runs in: its overrides, its mode, its config files (one that is
not valid YAML is one message) and its console (each line Lightning logs printed once)."""

from __future__ import annotations

import logging
from typing import Any

from vaelab.errors import ConfigError

#: Lightning's loggers that get a console handler of their own when Lightning is imported
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")
#: the loggers of Lightning's ``rank_zero_info``, through which it prints its tips
LIGHTNING_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def command_line_overrides() -> list[str]:
    """The command-line overrides of this Hydra job (empty outside a Hydra run)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def in_multirun() -> bool:
    """Whether this is a job of a Hydra multirun (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def instantiate_config(config: Any, **kwargs: Any) -> Any:
    """Hydra's ``instantiate``, except that an error vaelab raised for the user inside a constructor (a
    :class:`~vaelab.errors.VaelabError`, e.g. a data folder that is a file) is raised as itself, one message,
    rather than wrapped in Hydra's "Error in call to target …" with the exception's repr; also from constructors
    nested several instantiations deep (the module builds the pure model, which builds its net)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from vaelab.errors import VaelabError

    try:
        return instantiate(config, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while isinstance(cause, InstantiationException):
            cause = cause.__cause__
        if isinstance(cause, VaelabError):
            raise cause from None
        raise


class ConfigFileError(ConfigError):
    """A config file is not valid YAML; the message names the file, the line and the column."""


def yaml_error_message(err: Exception, path: str | None = None) -> str:
    """What is wrong with the config file ``path`` that YAML could not read (``err``, a ``yaml.YAMLError``): the
    file, line and column (counted from 1, as editors do) and YAML's own words, and the way out."""
    mark = getattr(err, "problem_mark", None)
    name = getattr(mark, "name", None)
    file = name if name and not name.startswith("<") else path or "(unnamed)"
    where = f", at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err)
    context, begun = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and begun is not None:
        problem += f" ({context} that begins at line {begun.line + 1}, column {begun.column + 1})"
    return f"The config file {file} is not valid YAML{where}: {problem}. Correct the file and run again"


def say_broken_yaml() -> None:
    """Make a config file that is not valid YAML (a user's own, under ``--config-dir``, or one of vaelab's) one
    :class:`ConfigFileError` naming the file, line and column, which Hydra prints as its message, where it printed
    its own traceback through its config loader. Installed, once, on the config sources Hydra registered for files
    and packages (after its plugin scan, which loads their modules afresh); with a Hydra that has no such registry,
    its own traceback is what is printed."""
    import yaml
    from hydra.core.plugins import Plugins

    try:
        from hydra._internal.sources_registry import SourcesRegistry
    except ImportError:  # (another Hydra than 1.3's)
        return
    Plugins.instance()  # (the scan registers the config sources)
    for scheme in ("file", "pkg"):
        source = SourcesRegistry.instance().resolve(scheme)
        load = source.load_config
        if getattr(load, "_vaelab", False):
            continue

        def load_config(self: Any, config_path: str, _load: Any = load) -> Any:
            try:
                return _load(self, config_path)
            except yaml.YAMLError as err:
                raise ConfigFileError(yaml_error_message(err, f"{self.path}/{config_path}")) from None

        load_config._vaelab = True
        source.load_config = load_config


class _NoTips(logging.Filter):
    """Leave out Lightning's "💡 Tip: …" lines: they advertise its company's products (LitLogger, litmodels) and say
    nothing about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet_lightning_tips() -> None:
    """Keep Lightning's tips (:class:`_NoTips`) off the console and out of the log file; its other lines stay."""
    for name in LIGHTNING_RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTips) for f in logger.filters):
            logger.addFilter(_NoTips())


def lightning_lines_once() -> None:
    """Print each line Lightning logs once, through Hydra's job logging: its console, and the job's log file in the
    run folder, which then holds every one of them.

    Lightning gives its loggers a console handler of their own on import (``lightning``'s, printing ``INFO: …``;
    ``lightning.pytorch``'s and ``lightning.fabric``'s too, passing nothing on, when logging was not set up yet), so
    with Hydra's handlers on the root logger each line was printed twice, or kept out of the log file. Where the root
    logger has handlers (Hydra's job logging, not ``hydra/job_logging=none``), those console handlers are removed
    and Lightning's lines passed on to the root's. Lightning's tips are left out (:func:`quiet_lightning_tips`)."""
    import lightning  # noqa: F401  (it adds its handlers on import: before they are looked at)

    quiet_lightning_tips()
    if not logging.getLogger().handlers:
        return
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:  # (Lightning's console handlers; not a file handler)
                logger.removeHandler(handler)
        logger.propagate = True
