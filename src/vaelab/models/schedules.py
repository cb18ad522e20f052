"""Schedules for the weight β of the KL term, each a pure function of the global optimisation step.

The objective (:mod:`vaelab.models.objectives`) reads β(step): ``recon + β(step) · KL`` for the ELBO objective,
γ = β(step) for capacity control, the weight of the total correlation for β-TC-VAE. ``model.beta`` is the
schedule's target weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vaelab import rules


def _check(name: str, value: float, minimum: float, strict: bool = False) -> None:
    bad = value <= minimum if strict else value < minimum
    if bad:
        relation = ">" if strict else ">="
        raise ValueError(f"beta schedule: {name} must be {relation} {minimum}, got {value}")


@dataclass(frozen=True)
class ConstantBeta:
    """β(step) = β: the VAE (β = 1, Kingma & Welling 2014) and the β-VAE (Higgins et al. 2017, eq. 4)."""

    beta: float = 1.0
    #: where the schedule's settings live in the config, for messages
    config_prefix = "model.beta_schedule"

    def __post_init__(self) -> None:
        rules.check("model.beta", self.beta)  # (the one check of model.beta: the config's and Python's)

    def __call__(self, step: int) -> float:
        return float(self.beta)

    def end_state(self, step: int) -> str:
        """What the schedule has reached at ``step``, for a person."""
        return f"β ends at {self(step):.3g} (target {self.beta:g})"

    @property
    def length(self) -> tuple[str, int] | None:
        """The setting and number of steps the schedule needs to do what it is for (reach β, finish a cycle, reach
        ``c_max``); None when it needs none."""
        return None


@dataclass(frozen=True)
class LinearWarmup(ConstantBeta):
    """KL warm-up (Bowman et al. 2016, sec. 3.1): β rises linearly from ``start`` to β over ``warmup_steps``."""

    warmup_steps: int = 1000
    start: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check("warmup_steps", self.warmup_steps, 0, strict=True)
        _check("start", self.start, 0.0)

    def __call__(self, step: int) -> float:
        progress = min(max(step, 0) / self.warmup_steps, 1.0)
        return float(self.start + (self.beta - self.start) * progress)

    @property
    def length(self) -> tuple[str, int]:
        return "warmup_steps", self.warmup_steps


@dataclass(frozen=True)
class CyclicalBeta(ConstantBeta):
    """Cyclical annealing (Fu et al. 2019, eq. 5): the steps are cut into cycles of ``cycle_steps``; in each,
    β rises linearly from 0 to β over the first ``ramp_fraction`` (R) of the cycle and then stays at β."""

    cycle_steps: int = 1000
    ramp_fraction: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        _check("cycle_steps", self.cycle_steps, 0, strict=True)
        if not 0.0 < self.ramp_fraction <= 1.0:
            raise ValueError(f"beta schedule: ramp_fraction must be in (0, 1], got {self.ramp_fraction}")

    def __call__(self, step: int) -> float:
        tau = (max(step, 0) % self.cycle_steps) / self.cycle_steps
        return float(self.beta * min(tau / self.ramp_fraction, 1.0))

    @property
    def length(self) -> tuple[str, int]:
        return "cycle_steps", self.cycle_steps


def outlasting_message(schedule: Any, total_steps: float) -> str | None:
    """What to tell the user when ``schedule`` (a β schedule, or an objective with a schedule of its own such as
    capacity control) needs more steps than training takes: a warm-up that never reaches β, a cycle never
    finished, a capacity never reached. None when it fits, or when it needs no particular length."""
    if schedule.length is None or not total_steps < schedule.length[1]:
        return None
    key, steps = schedule.length
    end = int(total_steps)
    return (
        f"The schedule {type(schedule).__name__} needs {key}={steps} steps but this run trains {end}: "
        f"{schedule.end_state(end)}. Set {schedule.config_prefix}.{key} to at most {end}, or train longer "
        f"(trainer.max_epochs)."
    )
