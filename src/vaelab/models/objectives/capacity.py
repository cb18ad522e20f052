"""Capacity control: the KL is pulled towards a target C that rises during training (Burgess et al. 2018)."""

from __future__ import annotations

from vaelab.models.objectives.base import Objective, ObjectiveValue


class Capacity(Objective):
    """loss = recon + γ · |KL − C(step)| (Burgess et al. 2018, "Understanding disentangling in β-VAE", eq. 8).

    C rises linearly from 0 to ``c_max`` nats over ``capacity_steps`` steps; γ is β(step) of the model's β schedule
    (``model.beta``; the paper uses γ = 1000). KL is the batch mean, so the absolute value is taken of the batch's
    mean KL minus C, as in the paper's minibatch objective.
    """

    config_prefix = "model.objective"

    beta_name = "gamma"

    def __init__(self, c_max: float = 25.0, capacity_steps: int = 100_000, schedule=None) -> None:
        super().__init__(schedule)
        if not c_max >= 0:
            raise ValueError(f"capacity control: c_max must be >= 0, got {c_max}")
        if not capacity_steps > 0:
            raise ValueError(f"capacity control: capacity_steps must be > 0, got {capacity_steps}")
        self.c_max, self.capacity_steps = float(c_max), int(capacity_steps)

    def capacity(self, step: int) -> float:
        """C(step) = c_max · min(step / capacity_steps, 1), a pure function of the step."""
        return float(self.c_max * min(max(step, 0) / self.capacity_steps, 1.0))

    def forward(self, model, x, out, step) -> ObjectiveValue:
        return ObjectiveValue(out.recon.mean() + self.schedule(step) * (out.kl.mean() - self.capacity(step)).abs())

    def weights(self, step: int) -> dict[str, float]:
        return {"beta": self.schedule(step), "capacity": self.capacity(step)}

    # the capacity ramp is a schedule too: a run shorter than it never reaches c_max
    @property
    def length(self) -> tuple[str, int]:
        return "capacity_steps", self.capacity_steps

    def end_state(self, step: int) -> str:
        return f"C ends at {self.capacity(step):.3g} of c_max={self.c_max:g} nats"

    def schedules(self) -> list:
        return [self.schedule, self]
