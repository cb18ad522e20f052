"""β schedules (vaelab.models.schedules) and capacity control's C (vaelab.models.objectives.Capacity): known values,
periodicity, purity, checks, use in the loss."""

from __future__ import annotations

import types

import pytest
import torch

from vaelab.models.objectives import Capacity
from vaelab.models.schedules import ConstantBeta, CyclicalBeta, LinearWarmup, outlasting_message
from vaelab.training import AutoencoderModule

CAPACITY = {"_target_": "vaelab.models.objectives.Capacity"}


def test_constant_beta():
    s = ConstantBeta(beta=4.0)
    assert [s(k) for k in (0, 1, 10, 10**7)] == [4.0] * 4
    assert ConstantBeta()(5) == 1.0


def test_linear_warmup_known_values():
    s = LinearWarmup(beta=2.0, warmup_steps=10)
    assert [s(k) for k in (-3, 0, 1, 5, 10, 11, 1000)] == pytest.approx([0.0, 0.0, 0.2, 1.0, 2.0, 2.0, 2.0])
    offset = LinearWarmup(beta=1.5, warmup_steps=4, start=0.5)
    assert [offset(k) for k in (0, 1, 2, 4, 8)] == pytest.approx([0.5, 0.75, 1.0, 1.5, 1.5])


def test_cyclical_known_values_and_period():
    s = CyclicalBeta(beta=1.0, cycle_steps=10, ramp_fraction=0.5)
    expected = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert [s(k) for k in range(10)] == pytest.approx(expected)
    for k in range(40):
        assert s(k) == s(k + 10) == s(k + 30)
    full_ramp = CyclicalBeta(beta=3.0, cycle_steps=8, ramp_fraction=1.0)
    assert [full_ramp(k) for k in (0, 2, 4, 7, 8, 12)] == pytest.approx([0.0, 0.75, 1.5, 2.625, 0.0, 1.5])


def test_capacity_rises_linearly_then_clamps():
    s = Capacity(c_max=25.0, capacity_steps=100, schedule=ConstantBeta(beta=1000.0))
    assert [s.weights(k)["beta"] for k in (0, 50, 10**6)] == [1000.0] * 3  # γ is constant
    for k in range(0, 101, 7):
        assert s.capacity(k) == pytest.approx(0.25 * k)
    assert [s.capacity(k) for k in (100, 101, 5000)] == [25.0] * 3
    assert s.capacity(-5) == 0.0


@pytest.mark.parametrize(
    "schedule",
    [
        ConstantBeta(beta=2.0),
        LinearWarmup(beta=2.0, warmup_steps=17),
        CyclicalBeta(beta=2.0, cycle_steps=13, ramp_fraction=0.3),
        Capacity(c_max=5.0, capacity_steps=23, schedule=ConstantBeta(beta=2.0)),
    ],
    ids=lambda s: type(s).__name__,
)
def test_schedules_are_pure_functions_of_the_step(schedule):
    value = schedule.weights if isinstance(schedule, Capacity) else schedule
    steps = list(range(60))
    forward = [value(k) for k in steps]
    backward = [value(k) for k in reversed(steps)][::-1]
    shuffled = torch.randperm(60, generator=torch.Generator().manual_seed(0)).tolist()
    by_shuffle = dict((k, value(k)) for k in shuffled)
    assert forward == backward == [by_shuffle[k] for k in steps]


@pytest.mark.parametrize(
    "make",
    [
        lambda: ConstantBeta(beta=-0.1),
        lambda: LinearWarmup(warmup_steps=0),
        lambda: LinearWarmup(warmup_steps=-5),
        lambda: LinearWarmup(beta=-1.0, warmup_steps=5),
        lambda: CyclicalBeta(cycle_steps=0),
        lambda: CyclicalBeta(ramp_fraction=0.0),
        lambda: CyclicalBeta(ramp_fraction=1.5),
        lambda: Capacity(c_max=-1.0),
        lambda: Capacity(capacity_steps=0),
    ],
)
def test_invalid_arguments_raise(make):
    with pytest.raises(ValueError):
        make()


# ----------------------------------------------------------------------------------------- through the model


def _model(schedule: dict | None, beta: float, objective: dict | None = None) -> AutoencoderModule:
    torch.manual_seed(0)
    return AutoencoderModule(image_shape=[1, 8, 8], latent_dim=3, beta=beta, beta_schedule=schedule,
                             objective=objective)


def _at_step(model: AutoencoderModule, step: int) -> None:
    """Fake the trainer's global step (the model reads ``trainer.global_step`` when a trainer is attached)."""
    model._trainer = types.SimpleNamespace(global_step=step)


X = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def training_pass(model: AutoencoderModule, x: torch.Tensor):
    """The pass and the objective's loss of a training step."""
    return model.model_step((x,), "train")


def test_capacity_control_loss():
    model = _model(None, 2.0, {**CAPACITY, "c_max": 5.0, "capacity_steps": 10})
    out = training_pass(model, X)  # no trainer: step 0, C = 0
    assert (out.beta, out.capacity) == (2.0, 0.0)
    torch.testing.assert_close(out.loss, out.recon.mean() + 2.0 * (out.kl.mean() - 0.0).abs())

    for step, capacity in [(4, 2.0), (10, 5.0), (50, 5.0)]:
        _at_step(model, step)
        out = training_pass(model, X)
        assert (out.beta, out.capacity) == (2.0, capacity)
        assert out.kl.mean() < capacity  # so the absolute value matters
        torch.testing.assert_close(out.loss, out.recon.mean() + 2.0 * (capacity - out.kl.mean()))


def test_capacity_control_takes_the_batch_mean_kl_before_the_absolute_value():
    """A batch with some images' KL above C and some below: the loss is γ·|mean KL − C| (Burgess et al.'s minibatch
    objective), not the mean of per-image |KL − C|, which would differ here."""
    model = _model(None, 3.0, {**CAPACITY, "c_max": 1.0, "capacity_steps": 1})
    _at_step(model, 5)  # C = c_max from step 1 on
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():  # spread the encoder's means so that the per-image KLs differ widely
        model.model.encoder[-1].weight[:3].mul_(10.0)  # the rows of μ (the last three are log σ²)
    c = float(model(x).kl.quantile(0.3))  # the KL is in closed form: the same in the next pass
    model.objective.c_max = c
    out = training_pass(model, x)
    assert (out.kl > c).sum() > 10 and (out.kl < c).sum() > 10
    per_image = 3.0 * (out.kl - c).abs().mean()
    batch_mean = 3.0 * (out.kl.mean() - c).abs()
    assert not torch.isclose(per_image, batch_mean, rtol=1e-3)
    torch.testing.assert_close(out.loss, out.recon.mean() + batch_mean)


def test_warmup_weight_used_in_the_loss():
    model = _model({"_target_": "vaelab.models.schedules.LinearWarmup", "warmup_steps": 10}, 4.0)
    for step, beta in [(0, 0.0), (5, 2.0), (10, 4.0), (30, 4.0)]:
        _at_step(model, step)
        out = training_pass(model, X)
        assert out.beta == beta and out.capacity == 0.0
        torch.testing.assert_close(out.loss, out.recon.mean() + beta * out.kl.mean())


def test_a_schedule_longer_than_training_is_reported_with_its_fix():
    warmup = LinearWarmup(beta=1.0, warmup_steps=1000)
    message = outlasting_message(warmup, 820)
    assert "warmup_steps=1000" in message and "820" in message and "β ends at 0.82" in message
    assert "model.beta_schedule.warmup_steps" in message
    assert outlasting_message(warmup, 1000) is None and outlasting_message(warmup, float("inf")) is None
    assert "cycle_steps=1000" in outlasting_message(CyclicalBeta(beta=1.0, cycle_steps=1000), 999)
    capacity = outlasting_message(Capacity(c_max=25.0, capacity_steps=100_000, schedule=ConstantBeta(1000.0)), 1000)
    assert "C ends at 0.25 of c_max=25 nats" in capacity and "model.objective.capacity_steps" in capacity
    assert outlasting_message(ConstantBeta(beta=4.0), 1) is None
