"""What a task needs to know about the Hydra job it runs in."""

from __future__ import annotations

from typing import Any


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
    rather than wrapped in Hydra's "Error in call to target …" with the exception's repr."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from vaelab.errors import VaelabError

    try:
        return instantiate(config, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, VaelabError):
            raise cause from None
        raise
