"""What an objective is: it takes the model's encoder/decoder pass over a batch and returns the loss to minimise and
the terms to log. The LightningModule computes the pass once; the objective decides what to do with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vaelab.models.output import AutoencoderOutput
from vaelab.models.schedules import ConstantBeta


@dataclass
class ObjectiveValue:
    """The loss of one batch and the extra terms the objective logs (each a batch mean in nats per image, logged as
    ``<stage>/<name>``, its epoch mean exact over images)."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


class Objective(nn.Module):
    """Base class of the training objectives (one per file in this package, one YAML each in
    ``conf/model/objective/``).

    Attributes a subclass sets:
        variational: whether it needs q(z|x) (a Gaussian encoder); False for the deterministic autoencoder.
        term_names: the names of the extra terms its :class:`ObjectiveValue` carries, always the same ones.

    ``schedule`` is the β schedule (:mod:`vaelab.models.schedules`), built by the model from ``model.beta`` and
    ``model/beta_schedule``; an objective without a β ignores it. Objectives are ``nn.Module``s, so any state they
    hold (buffers, parameters) is saved in the checkpoint with the model's.
    """

    variational: bool = True
    term_names: tuple[str, ...] = ()

    def __init__(self, schedule: ConstantBeta | None = None) -> None:
        super().__init__()
        self.schedule = schedule if schedule is not None else ConstantBeta()

    def forward(self, model: Any, x: torch.Tensor, out: AutoencoderOutput, step: int) -> ObjectiveValue:
        """The loss of a batch ``x`` given the model's pass ``out`` over it, at optimisation step ``step``.
        ``model`` is there for objectives that decode more than the pass did (IWAE)."""
        raise NotImplementedError  # pragma: no cover - interface

    def weights(self, step: int) -> dict[str, float]:
        """The scalar settings the loss used at ``step`` (β, a capacity C, …), logged each epoch."""
        return {"beta": self.schedule(step)}

    def schedules(self) -> list[Any]:
        """Everything here with a length in steps that a run may be too short for (see ``outlasting_message``)."""
        return [self.schedule]

    def bind(self, trainer: Any) -> None:
        """Called at the start of fitting, for an objective that needs to know the data (β-TC-VAE: its size)."""
