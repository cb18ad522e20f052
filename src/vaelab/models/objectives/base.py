"""What an objective is: it takes the pure model and its pass over a batch and returns the loss to minimise and the
terms to log. The Lightning module computes the pass once; the objective decides what to do with it. Nothing but
the Lightning module's training, validation and test steps runs an objective."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vaelab.models.output import AutoencoderOutput
from vaelab.models.schedules import ConstantBeta


@dataclass(frozen=True)
class DataFacts:
    """What an objective may need to know of the data, handed in when fitting starts."""

    num_train_images: int | None = None
    #: images per batch of each split (``train``: ``data.batch_size``; ``val``, ``test``: the eval batch size)
    batch_sizes: dict[str, int] = field(default_factory=dict)
    #: the images of each split that each process goes through in an epoch (one number per process)
    shards: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass
class ObjectiveValue:
    """The loss of one batch and the extra terms the objective logs (each a batch mean in nats per image, logged as
    ``<stage>/<name>``, its epoch mean exact over images)."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    #: the loss of the objective's adversary on this batch (FactorVAE's discriminator), computed on detached codes
    #: so that it reaches the adversary's weights only; None for an objective without one
    adversary_loss: torch.Tensor | None = None


class Objective(nn.Module):
    """Base class of the training objectives (one per file in this package, one YAML each in
    ``conf/model/objective/``).

    Attributes a subclass sets:
        needs_posterior: whether it needs a Gaussian posterior q(z|x) (``model.code=gaussian``); False for the
            objectives of deterministic codes.
        term_names: the names of the extra terms its :class:`ObjectiveValue` carries, always the same ones.
        beta_name: what ``model.beta`` (the target of the β schedule) is to this objective, by the name its paper
            gives it (``beta``; FactorVAE's and capacity control's ``gamma``, VQ-VAE's ``commitment`` cost), or None
            for an objective that has no such weight. Run names and the HParams columns show the value under this
            name (:mod:`vaelab.tasks.hparams`), so one column never means two things.

    ``schedule`` is the β schedule (:mod:`vaelab.models.schedules`), built by the model from ``model.beta`` and
    ``model/beta_schedule``; an objective without a β ignores it. Objectives are ``nn.Module``s, so any state they
    hold (buffers, parameters) is saved in the checkpoint with the model's.
    """

    needs_posterior: bool = True
    term_names: tuple[str, ...] = ()
    beta_name: str | None = "beta"

    def __init__(self, schedule: ConstantBeta | None = None) -> None:
        super().__init__()
        self.schedule = schedule if schedule is not None else ConstantBeta()

    def forward(self, model: Any, x: torch.Tensor, out: AutoencoderOutput, step: int) -> ObjectiveValue:
        """The loss of a batch ``x`` given the pure model's pass ``out`` over it, at optimisation step ``step``.
        ``model`` (:class:`~vaelab.models.autoencoder.Autoencoder`) is there for objectives that need more than the
        pass (IWAE decodes K samples, the contractive AE differentiates the encoder)."""
        raise NotImplementedError  # pragma: no cover - interface

    def code_terms(self, model: Any, out: AutoencoderOutput, names: tuple[str, ...], needs: str,
                   use: str) -> dict[str, torch.Tensor]:
        """The batch terms ``names`` that an objective reads from its code's pass (``out.extras``: VQ-VAE's codebook
        terms, JointVAE's two KLs, a hierarchy's per-layer KLs); when the code gives some not, one ``ValueError``:
        the objective ``needs`` (a code of some kind), what ``model.code`` is, the missing terms and what to ``use``."""
        missing = [name for name in names if name not in out.extras]
        if missing:
            raise ValueError(f"{needs}, but model.code is a {type(model.code).__name__} (it gives no "
                             f"{', '.join(missing)}): {use}")
        return {name: out.extras[name] for name in names}

    def weights(self, step: int) -> dict[str, float]:
        """The scalar settings the loss used at ``step`` (β, a capacity C, …), logged each epoch."""
        return {"beta": self.schedule(step)}

    def schedules(self) -> list[Any]:
        """Everything here with a length in steps that a run may be too short for (see ``outlasting_message``)."""
        return [self.schedule]

    def bind(self, data: DataFacts) -> None:
        """Called when fitting starts with what is known of the training data, for an objective that needs it
        (β-TC-VAE: its size)."""

    # ------------------------------------------------------------------ an adversary (FactorVAE's discriminator)
    def adversary_parameters(self) -> list[nn.Parameter]:
        """The weights of an adversary the objective trains against the model with an optimiser of its own (none
        here). An objective that has some returns its loss as :attr:`ObjectiveValue.adversary_loss`, and the
        Lightning module then optimises manually: the model's step on ``loss``, then the adversary's on its loss."""
        return []

    def adversary_optimizer(self) -> torch.optim.Optimizer | None:
        """The adversary's optimiser over :meth:`adversary_parameters` (None: no adversary)."""
        return None

    @property
    def has_adversary(self) -> bool:
        return bool(self.adversary_parameters())
