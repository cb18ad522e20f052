"""Schedules for the weight of the KL term, each a pure function of the global optimisation step.

The model's loss is ``recon + β(step) · KL`` or, for capacity control, ``recon + β(step) · |KL − C(step)|``.
``model.beta`` is the schedule's target weight (γ in Burgess et al. for capacity control).
"""

from __future__ import annotations

from dataclasses import dataclass


def _check(name: str, value: float, minimum: float, strict: bool = False) -> None:
    bad = value <= minimum if strict else value < minimum
    if bad:
        relation = ">" if strict else ">="
        raise ValueError(f"beta schedule: {name} must be {relation} {minimum}, got {value}")


@dataclass(frozen=True)
class ConstantBeta:
    """β(step) = β: the VAE (β = 1, Kingma & Welling 2014) and the β-VAE (Higgins et al. 2017, eq. 4)."""

    beta: float = 1.0
    uses_capacity = False

    def __post_init__(self) -> None:
        _check("beta", self.beta, 0.0)

    def __call__(self, step: int) -> float:
        return float(self.beta)

    def capacity(self, step: int) -> float:
        return 0.0

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


@dataclass(frozen=True)
class CapacityControl(ConstantBeta):
    """Capacity control (Burgess et al. 2018, eq. 8): loss = recon + γ·|KL − C| with C rising linearly from 0 to
    ``c_max`` nats over ``capacity_steps`` steps. γ is the ``beta`` field (the paper uses γ = 1000)."""

    c_max: float = 25.0
    capacity_steps: int = 100_000
    uses_capacity = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check("c_max", self.c_max, 0.0)
        _check("capacity_steps", self.capacity_steps, 0, strict=True)

    def capacity(self, step: int) -> float:
        return float(self.c_max * min(max(step, 0) / self.capacity_steps, 1.0))

    @property
    def length(self) -> tuple[str, int]:
        return "capacity_steps", self.capacity_steps


def outlasting_message(schedule: ConstantBeta, total_steps: float) -> str | None:
    """What to tell the user when ``schedule`` needs more steps than training takes (a warm-up that never reaches β,
    a cycle never finished, a capacity never reached), or None when it fits."""
    if schedule.length is None or not total_steps < schedule.length[1]:
        return None
    key, steps = schedule.length
    end = int(total_steps)
    reached = f"C ends at {schedule.capacity(end):.3g} of c_max={schedule.c_max:g} nats" if schedule.uses_capacity \
        else f"β ends at {schedule(end):.3g} (target {schedule.beta:g})"
    return (
        f"The β schedule {type(schedule).__name__} needs {key}={steps} steps but this run trains {end}: {reached}. "
        f"Set model.beta_schedule.{key} to at most {end}, or train longer (trainer.max_epochs)."
    )
