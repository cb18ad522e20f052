"""JointVAE's objective: the reconstruction, and the continuous and discrete KLs each steered to a capacity of its
own that rises during training (Dupont 2018); the Gumbel-softmax temperature's schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from vaelab.errors import ConfigError
from vaelab.models.joint_code import DEFAULT_TEMPERATURE, check_discrete, check_temperature
from vaelab.models.objectives.base import Objective, ObjectiveValue

#: the per-image terms the joint code hands over (vaelab.models.joint_code.JointCode)
CODE_TERMS = ("kl_cont", "kl_disc")


def max_discrete_capacity(discrete: Sequence[int]) -> float:
    """Σ_i log n_i: the most KL a set of categorical parts can carry against uniform priors (each at one-hot q)."""
    return float(sum(math.log(n) for n in discrete))


@dataclass(frozen=True)
class CapacityRamp:
    """C(step) = c_max · min(step / steps, 1): a capacity rising linearly from 0 to ``c_max`` nats over ``steps``
    (the C of Burgess et al. 2018, eq. 8; Dupont 2018, sec. 3). ``key`` names its settings, ``<key>_max`` and
    ``<key>_steps`` under ``model.objective``."""

    key: str
    c_max: float
    steps: int
    config_prefix = "model.objective"

    def __post_init__(self) -> None:
        if isinstance(self.c_max, bool) or not isinstance(self.c_max, (int, float)) or not 0 <= self.c_max < math.inf:
            raise ConfigError(f"model.objective.{self.key}_max = {self.c_max!r} is invalid: a capacity is a finite "
                              "number of nats >= 0, e.g. 5")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"model.objective.{self.key}_steps = {self.steps!r} is invalid: it must be an integer "
                              ">= 1, e.g. 25000")

    def __call__(self, step: int) -> float:
        return float(self.c_max * min(max(step, 0) / self.steps, 1.0))

    # (what vaelab.models.schedules.outlasting_message reads: a run shorter than the ramp never reaches c_max)
    @property
    def length(self) -> tuple[str, int]:
        return f"{self.key}_steps", self.steps

    def end_state(self, step: int) -> str:
        return f"{self.key} ends at {self(step):.3g} of {self.key}_max={self.c_max:g} nats"


@dataclass(frozen=True)
class TemperatureSchedule:
    """τ(step) = max(τ_min, τ₀ · exp(−r · step)): the Gumbel-softmax temperature, annealed exponentially towards
    ``minimum`` at rate ``decay`` r per step (the schedule τ = max(0.5, exp(−rt)) of Jang et al. 2017's experiments).
    ``decay = 0`` (the default) keeps τ = τ₀, as Dupont (2018) does with τ = 0.67."""

    start: float = DEFAULT_TEMPERATURE
    minimum: float = 0.5
    decay: float = 0.0

    def __post_init__(self) -> None:
        check_temperature("model.objective.temperature", self.start)
        check_temperature("model.objective.temperature_min", self.minimum)
        if isinstance(self.decay, bool) or not isinstance(self.decay, (int, float)) or not 0 <= self.decay < math.inf:
            raise ConfigError(f"model.objective.temperature_decay = {self.decay!r} is invalid: it must be a finite "
                              "number >= 0 (0: a constant temperature), e.g. 1e-4")
        if self.decay > 0 and self.minimum > self.start:
            raise ConfigError(f"model.objective.temperature_min = {self.minimum!r} is invalid: an annealed "
                              f"temperature falls, so it must be at most model.objective.temperature = {self.start!r}")

    def __call__(self, step: int) -> float:
        if self.decay == 0:
            return float(self.start)
        return float(max(self.minimum, self.start * math.exp(-self.decay * max(step, 0))))

    length = None  # (it needs no particular number of steps)


class JointVAE(Objective):
    """loss = recon + γ·|KL_cont − C_z(step)| + γ·|KL_disc − C_c(step)| (Dupont 2018, "Learning disentangled joint
    continuous and discrete representations", eq. 7), the KLs batch means in nats per image.

    Each capacity rises linearly from 0 to its maximum (``capacity_cont_max`` over ``capacity_cont_steps``,
    ``capacity_disc_max`` over ``capacity_disc_steps``; the paper's MNIST: 5 nats over 25,000 steps each, γ = 30).
    γ is β(step) of the model's β schedule (``model.beta``). The discrete capacity cannot exceed what the
    categorical parts can carry, Σ_i log n_i: a larger ``capacity_disc_max`` is refused (Dupont's code clamps it
    silently, which also changes how fast C_c rises). ``discrete`` is the code's ``model.code.discrete``, for that
    check when the objective is built; without it the check runs on the first batch.

    The Gumbel-softmax temperature τ(step) (:class:`TemperatureSchedule`) is set on the code by this objective: the
    code draws with the buffer ``model.code.temperature``, and each training batch at step s writes τ(s + 1) there
    for the next batch (the objective runs after the model's pass). ``temperature`` must equal the code's own
    starting τ, which the preset ensures (``${..code.temperature}``).

    Logged: ``kl_cont`` and ``kl_disc``, and as settings γ (``beta``), ``capacity_cont``, ``capacity_disc`` and
    ``temperature``.
    """

    needs_posterior = False
    term_names = CODE_TERMS
    beta_name = "gamma"
    config_prefix = "model.objective"

    def __init__(self, capacity_cont_max: float = 5.0, capacity_cont_steps: int = 25_000,
                 capacity_disc_max: float = 2.3, capacity_disc_steps: int = 25_000,
                 temperature: float = DEFAULT_TEMPERATURE, temperature_min: float = 0.5,
                 temperature_decay: float = 0.0, discrete: Sequence[int] | None = None, schedule=None) -> None:
        super().__init__(schedule)
        self.capacity_cont = CapacityRamp("capacity_cont", capacity_cont_max, capacity_cont_steps)
        self.capacity_disc = CapacityRamp("capacity_disc", capacity_disc_max, capacity_disc_steps)
        self.temperature = TemperatureSchedule(temperature, temperature_min, temperature_decay)
        self._checked: tuple[int, ...] | None = None
        if discrete is not None:
            self.check_capacity(check_discrete(list(discrete)))

    def check_capacity(self, discrete: tuple[int, ...]) -> None:
        """Refuse a discrete capacity that the categorical parts ``discrete`` cannot carry."""
        limit = max_discrete_capacity(discrete)
        if self.capacity_disc.c_max > limit:
            raise ConfigError(
                f"model.objective.capacity_disc_max = {self.capacity_disc.c_max:g} is invalid: the discrete code "
                f"model.code.discrete = {list(discrete)} carries at most Σ log n_i = {limit:.4g} nats; set it to at "
                f"most {math.floor(limit * 100) / 100:g}"
            )
        self._checked = discrete

    def forward(self, model, x, out, step) -> ObjectiveValue:
        terms = self.code_terms(model, out, CODE_TERMS,
                                "the JointVAE objective needs a joint continuous and discrete code",
                                "use model=joint_vae, or model/code=joint")
        if self._checked != model.code.discrete:
            self.check_capacity(model.code.discrete)
        if model.training:  # the temperature the code draws the next batch with
            model.code.temperature.fill_(self.temperature(step + 1))
        kl_cont, kl_disc = terms["kl_cont"].mean(), terms["kl_disc"].mean()
        gamma = self.schedule(step)
        loss = (out.recon.mean() + gamma * (kl_cont - self.capacity_cont(step)).abs()
                + gamma * (kl_disc - self.capacity_disc(step)).abs())
        return ObjectiveValue(loss, {"kl_cont": kl_cont, "kl_disc": kl_disc})

    def weights(self, step: int) -> dict[str, float]:
        return {"beta": self.schedule(step), "capacity_cont": self.capacity_cont(step),
                "capacity_disc": self.capacity_disc(step), "temperature": self.temperature(step)}

    def schedules(self) -> list:
        return [self.schedule, self.capacity_cont, self.capacity_disc]
