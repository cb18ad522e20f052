"""JointVAE (Dupont 2018): the joint Gaussian and Gumbel-softmax code, its KL to the uniform prior, the objective's two
capacities and temperature, the settings it refuses, the traversal of its categories and a training through the
real config. Each test names the plausible wrong version it catches."""

from __future__ import annotations

import json
import math
import threading
import types

import numpy as np
import pytest
import torch
from conftest import compose_eval, compose_train
from torch.distributions import Categorical, kl_divergence

from vaelab.dashboard.images import LatentTraversal
from vaelab.errors import ConfigError
from vaelab.models import Autoencoder
from vaelab.models.distributions import kl_to_standard_normal
from vaelab.models.joint_code import JointCode, kl_to_uniform, one_hot_argmax, relaxed_one_hot
from vaelab.models.objectives.joint_vae import (
    CapacityRamp,
    JointVAE,
    TemperatureSchedule,
    max_discrete_capacity,
)
from vaelab.models.schedules import ConstantBeta, outlasting_message
from vaelab.tasks.evaluate import run_evaluation
from vaelab.tasks.train import train

SMALL_NET = {"encoder": {"_target_": "vaelab.models.nets.MLPEncoder", "hidden_dims": [16]},
             "decoder": {"_target_": "vaelab.models.nets.MLPDecoder", "hidden_dims": [16]}}


def joint(discrete=(3, 4), cont: int = 2, temperature: float = 0.67) -> JointCode:
    code = JointCode(list(discrete), temperature)
    code.build(cont + sum(discrete))
    return code


def model(discrete=(3, 4), cont: int = 2) -> Autoencoder:
    torch.manual_seed(0)
    return Autoencoder([1, 8, 8], latent_dim=cont + sum(discrete), net=SMALL_NET,
                       code={"_target_": "vaelab.models.joint_code.JointCode", "discrete": list(discrete)})


# ------------------------------------------------------------------------------------------- the KL to the uniform
def test_the_discrete_kl_is_torchs_kl_of_the_categorical_to_the_uniform():
    """Σ_k q_k log(q_k·n): a sign slip (log(q_k/n)) or the negative entropy alone (no log n) fails here."""
    logits = torch.randn(64, 7, generator=torch.Generator().manual_seed(0)) * 3
    reference = kl_divergence(Categorical(logits=logits), Categorical(probs=torch.full((64, 7), 1 / 7)))
    torch.testing.assert_close(kl_to_uniform(logits), reference)


def test_the_discrete_kl_is_zero_at_the_uniform_and_log_n_at_a_one_hot():
    assert kl_to_uniform(torch.zeros(3, 10)).abs().max().item() < 1e-6
    one_hot = torch.tensor([[200.0, 0.0, 0.0, 0.0, 0.0]])  # q = (1, 0, …): softmax underflows, the KL must not NaN
    assert kl_to_uniform(one_hot).item() == pytest.approx(math.log(5), abs=1e-6)
    assert max_discrete_capacity([10, 2]) == pytest.approx(math.log(10) + math.log(2))


def test_the_codes_kl_is_the_gaussian_kl_plus_every_categorical_parts_kl():
    """kl = KL_cont + Σ_i KL_disc,i; catches a KL that drops the discrete part or keeps only the first part."""
    code = joint((3, 4), cont=2)
    h = torch.randn(5, code.encoder_features(9), generator=torch.Generator().manual_seed(1))
    assert h.shape[1] == 2 * 2 + 3 + 4  # μ and log σ² of the 2 continuous dimensions, then the logits
    out = code.train()(h)
    mu, logvar = h[:, :2], h[:, 2:4]
    torch.testing.assert_close(out.extras["kl_cont"], kl_to_standard_normal(mu, logvar))
    torch.testing.assert_close(out.extras["kl_disc"], kl_to_uniform(h[:, 4:7]) + kl_to_uniform(h[:, 7:]))
    torch.testing.assert_close(out.kl, out.extras["kl_cont"] + out.extras["kl_disc"])
    torch.testing.assert_close(code.eval()(h).kl, out.kl)  # closed form on the probabilities, whatever the draw


# ------------------------------------------------------------------------------------------ the Gumbel-softmax draw
def test_at_a_low_temperature_the_draws_are_categories_with_the_softmax_probabilities():
    """The Gumbel-max trick: argmax(logits + g) is category k with probability softmax(logits)_k, and the relaxed
    draw at τ → 0 is that one-hot, so its mean is the probabilities (Monte-Carlo, 40,000 draws: sd ≤ 0.0025).
    Catches noise of the wrong sign (logits − g), a softmax of the logits without noise and a missing /τ."""
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])).repeat(40_000, 1)
    torch.manual_seed(2)
    y = relaxed_one_hot(logits, torch.tensor(0.01))
    assert (y.max(dim=1).values > 0.99).float().mean() > 0.95  # nearly one-hot
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    torch.testing.assert_close(y.mean(0), probs, atol=0.012, rtol=0)
    frequencies = torch.bincount(y.argmax(1), minlength=4).float() / len(y)
    torch.testing.assert_close(frequencies, probs, atol=0.012, rtol=0)


def test_at_a_high_temperature_the_draws_flatten_to_the_uniform_vector():
    """softmax((logits + g)/τ) → (1/n, …, 1/n) as τ → ∞ (catches a τ that multiplies instead of divides)."""
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1])).repeat(100, 1)
    y = relaxed_one_hot(logits, torch.tensor(1e4))
    torch.testing.assert_close(y, torch.full_like(y, 1 / 3), atol=1e-3, rtol=0)


def test_training_draws_relaxed_codes_and_eval_mode_the_one_hot_argmax():
    code = joint((3, 4), cont=2)
    h = torch.randn(6, code.encoder_features(9), generator=torch.Generator().manual_seed(3), requires_grad=True)
    torch.manual_seed(4)
    relaxed = code.train()(h)
    discrete = relaxed.z[:, 2:]
    torch.testing.assert_close(discrete[:, :3].sum(1), torch.ones(6))  # each part a point of its simplex
    torch.testing.assert_close(discrete[:, 3:].sum(1), torch.ones(6))
    assert not torch.equal(discrete, discrete.round())  # relaxed, not one-hot, at τ = 0.67
    discrete.sum().backward()
    assert h.grad[:, 4:].abs().sum() > 0  # the draw is differentiable in the logits
    evaluated = code.eval()(h.detach())
    expected = torch.cat([one_hot_argmax(h[:, 4:7]), one_hot_argmax(h[:, 7:])], dim=1).detach()
    torch.testing.assert_close(evaluated.z[:, 2:], expected)
    # the deterministic code: μ and the one-hot argmax, in either mode
    torch.testing.assert_close(evaluated.mu, torch.cat([h[:, :2].detach(), expected], dim=1))
    torch.testing.assert_close(relaxed.mu.detach(), evaluated.mu)
    assert evaluated.logvar is None and code.locate(h)[1] is None


def test_the_code_draws_with_the_temperature_in_its_buffer():
    """Catches a code that ignores the temperature the objective writes (a τ fixed at construction)."""
    code = joint((4,), cont=1).train()
    h = torch.randn(2000, code.encoder_features(5), generator=torch.Generator().manual_seed(5))
    code.temperature.fill_(0.01)
    assert (code(h).z[:, 1:].max(1).values > 0.99).float().mean() > 0.95
    code.temperature.fill_(5.0)
    assert (code(h).z[:, 1:].max(1).values > 0.99).float().mean() < 0.05


def test_the_prior_is_a_standard_normal_and_uniform_one_hot_categories():
    """Monte-Carlo over 30,000 codes; catches randint(0, n − 1) (the last category never drawn)."""
    code = joint((3,), cont=2)
    z = code.prior_sample(30_000, 5, torch.Generator().manual_seed(6))
    assert z.shape == (30_000, 5)
    assert z[:, :2].mean().abs() < 0.02 and (z[:, :2].std() - 1).abs() < 0.02
    assert torch.equal(z[:, 2:].sum(1), torch.ones(30_000)) and set(z[:, 2:].unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(z[:, 2:].mean(0), torch.full((3,), 1 / 3), atol=0.012, rtol=0)


def test_the_model_samples_and_reconstructs_with_the_joint_code():
    ae = model((3, 4), cont=2)
    assert ae.encoder[-1].out_features == 2 * 2 + 7 and ae.latent_dim == 9
    assert ae.sample(4, torch.Generator().manual_seed(7)).shape == (4, 1, 8, 8)
    x = torch.rand(5, 1, 8, 8)
    assert ae.reconstruct(x).shape == x.shape and ae.embed(x).shape == (5, 9)
    assert not ae.variational and ae.code.has_prior and ae.code.has_kl


# ------------------------------------------------------------------------------------- capacities and temperature
def test_each_capacity_rises_linearly_to_its_maximum_and_stays():
    ramp = CapacityRamp("capacity_cont", 5.0, 25_000)
    assert [ramp(s) for s in (-3, 0, 5_000, 12_500, 25_000, 90_000)] == pytest.approx([0, 0, 1.0, 2.5, 5.0, 5.0])
    message = outlasting_message(ramp, 1000)
    assert "model.objective.capacity_cont_steps to at most 1000" in message and "0.2 of capacity_cont_max=5" in message


def test_the_temperature_is_constant_by_default_and_decays_exponentially_to_its_floor():
    assert TemperatureSchedule()(10**6) == pytest.approx(0.67)  # Dupont's constant τ
    schedule = TemperatureSchedule(1.0, 0.3, math.log(2) / 1000)  # halves every 1000 steps
    assert [schedule(s) for s in (0, 1000, 2000, 10**6)] == pytest.approx([1.0, 0.5, 0.3, 0.3])  # 0.25 < the floor
    assert schedule(500) == pytest.approx(2 ** -0.5)  # exponential, not linear (0.75)


def pass_of(recon: float, kl_cont: float, kl_disc: float, n: int = 4) -> types.SimpleNamespace:
    full = lambda v: torch.full((n,), float(v))  # noqa: E731
    return types.SimpleNamespace(recon=full(recon), extras={"kl_cont": full(kl_cont), "kl_disc": full(kl_disc)})


def test_the_loss_is_recon_plus_gamma_times_each_kls_distance_to_its_capacity():
    """Dupont eq. 7 at a known step: C_z = 2.5, C_c = 0.5 (half-way); recon 2, KL_cont 3, KL_disc 0.2, γ = 30:
    2 + 30·0.5 + 30·0.3, and with each KL on the other side of its capacity. Catches one capacity on the summed KL,
    a missing |·| on either term and the capacities swapped."""
    objective = JointVAE(5.0, 10_000, 1.0, 10_000, schedule=ConstantBeta(30.0))
    code = types.SimpleNamespace(discrete=(10,), temperature=torch.tensor(0.67))
    fake = types.SimpleNamespace(code=code, training=False)
    value = objective(fake, None, pass_of(2.0, 3.0, 0.2), step=5000)
    assert value.loss.item() == pytest.approx(2.0 + 30 * 0.5 + 30 * 0.3)
    # each KL on the other side of its capacity: KL_cont 1 < 2.5, KL_disc 0.9 > 0.5
    assert objective(fake, None, pass_of(2.0, 1.0, 0.9), 5000).loss.item() == pytest.approx(2.0 + 30 * 1.5 + 30 * 0.4)
    assert {k: v.item() for k, v in value.terms.items()} == pytest.approx({"kl_cont": 3.0, "kl_disc": 0.2})
    assert objective.term_names == ("kl_cont", "kl_disc") and objective.beta_name == "gamma"
    assert objective.weights(5000) == pytest.approx(
        {"beta": 30.0, "capacity_cont": 2.5, "capacity_disc": 0.5, "temperature": 0.67})


def test_a_training_batch_sets_the_temperature_of_the_next_and_evaluation_leaves_it():
    objective = JointVAE(temperature=1.0, temperature_min=0.1, temperature_decay=0.01)
    ae = model((10,), cont=2)
    x = torch.rand(4, 1, 8, 8)
    ae.train()
    objective(ae, x, ae(x), step=99)
    assert ae.code.temperature.item() == pytest.approx(math.exp(-0.01 * 100))  # τ(100), for step 100's batch
    ae.eval()
    objective(ae, x, ae(x), step=7)
    assert ae.code.temperature.item() == pytest.approx(math.exp(-1.0))
    assert "code.temperature" in ae.state_dict()  # saved with the weights: a resumed run goes on with it


def test_the_objective_refuses_a_code_without_the_two_kls():
    ae = Autoencoder([1, 8, 8], latent_dim=3, net=SMALL_NET)
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="JointVAE objective needs a joint continuous and discrete code.*GaussianCode"):
        JointVAE()(ae, x, ae(x), 0)


# --------------------------------------------------------------------------------------------- refused settings
@pytest.mark.parametrize(("build", "message"), [
    (lambda: joint(temperature=0.0), r"model.code.temperature = 0.0 is invalid: .* > 0"),
    (lambda: joint(temperature=-1), r"model.code.temperature = -1 is invalid"),
    (lambda: joint((10, 1)), r"model.code.discrete = \[10, 1\] is invalid: .* integer >= 2"),
    (lambda: joint(()), r"model.code.discrete = \[\] is invalid"),
    (lambda: JointCode([10]).build(10), r"model.latent_dim = 10 is invalid with model.code.discrete = \[10\]"),
    (lambda: JointVAE(temperature=0), r"model.objective.temperature = 0 is invalid"),
    (lambda: JointVAE(temperature_min=-0.5), r"model.objective.temperature_min = -0.5 is invalid"),
    (lambda: JointVAE(temperature=0.5, temperature_min=0.6, temperature_decay=1e-3),
     r"model.objective.temperature_min = 0.6 is invalid: .* at most model.objective.temperature = 0.5"),
    (lambda: JointVAE(temperature_decay=-1.0), r"model.objective.temperature_decay = -1.0 is invalid"),
    (lambda: JointVAE(capacity_cont_max=-1), r"model.objective.capacity_cont_max = -1 is invalid"),
    (lambda: JointVAE(capacity_disc_steps=0), r"model.objective.capacity_disc_steps = 0 is invalid"),
    (lambda: JointVAE(capacity_disc_max=5.0, discrete=[10]),
     r"model.objective.capacity_disc_max = 5 is invalid: .* \[10\] carries at most Σ log n_i = 2.303 nats"),
])
def test_bad_settings_are_refused_naming_the_key(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_a_discrete_capacity_beyond_the_codes_is_refused_on_the_first_batch_without_the_config():
    ae = model((2,), cont=2)  # log 2 = 0.69 nats at most
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ConfigError, match=r"capacity_disc_max = 1 is invalid: .* \[2\] carries at most"):
        JointVAE(capacity_disc_max=1.0)(ae, x, ae(x), 0)
    JointVAE(capacity_disc_max=0.69)(ae, x, ae(x), 0)


@pytest.mark.parametrize(("setting", "message"), [
    ("model.code.temperature=0", r"model.code.temperature = 0 is invalid"),
    ("model.code.discrete=[10,1]", r"model.code.discrete = \[10, 1\] is invalid"),
    ("model.objective.capacity_disc_max=5", r"model.objective.capacity_disc_max = 5 is invalid"),
    ("model.latent_dim=10", r"model.latent_dim = 10 is invalid with model.code.discrete"),
])
def test_bad_settings_in_the_config_stop_training_with_one_named_error(tmp_path, setting, message):
    cfg = compose_train(tmp_path, ["model=joint_vae", "data=digits", "logger=none", "callbacks=minimal", setting])
    with pytest.raises(ConfigError, match=message):
        train(cfg)


# ------------------------------------------------------------------------------------------------- the traversal
class Writer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, np.ndarray]] = []
        self.lock = threading.Lock()

    def add_image(self, tag, img_tensor, global_step=None, dataformats="CHW") -> None:
        with self.lock:
            self.calls.append((tag, img_tensor))


def test_the_traversal_walks_the_continuous_dimensions_and_each_category(monkeypatch):
    """Catches a traversal that walks the one-hot dimensions as if continuous, and a categorical card that does not
    set each category in turn on the first image's code."""
    ae = model((3, 4), cont=2).eval()
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        out = ae(x)
    seen: list[torch.Tensor] = []
    decode = ae.decode
    monkeypatch.setattr(ae, "decode", lambda z, **kwargs: (seen.append(z.clone()), decode(z, **kwargs))[1])
    view, writer = LatentTraversal(max_dims=10, steps=3, min_side=8), Writer()
    with torch.no_grad():
        view.draw(writer, "val", 1, ae, x, torch.zeros(5, dtype=torch.long), out)
    view.wait()
    assert sorted(tag for tag, _ in writer.calls) == ["val/traversal", "val/traversal_discrete"]
    categories, walked = seen
    assert walked.shape == (2 * 3, 9)  # the 2 continuous dimensions only, 3 steps each
    assert torch.equal(walked[:, 2:], out.mu[:1, 2:].repeat(6, 1))  # the categories kept
    assert categories.shape == (3 + 4, 9)
    torch.testing.assert_close(categories[:3, 2:5], torch.eye(3))  # part 0: each of its 3 categories in turn
    torch.testing.assert_close(categories[3:, 5:], torch.eye(4))  # part 1: each of its 4
    torch.testing.assert_close(categories[:3, 5:], out.mu[:1, 5:].repeat(3, 1))  # the other part kept
    torch.testing.assert_close(categories[:, :2], out.mu[:1, :2].repeat(7, 1))  # and the continuous dimensions
    view.teardown(None, ae, "fit")


# --------------------------------------------------------------------------------------- through the real config
def test_joint_vae_trains_logs_its_terms_evaluates_and_samples(tmp_path):
    cfg = compose_train(tmp_path, ["model=joint_vae", "data=digits", "callbacks=minimal", "logger=none",
                                   "model.objective.temperature_decay=0.05"])
    train(cfg)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed"
    for split in ("train", "val", "test"):
        values = record[split]
        for name in ("loss", "recon", "kl", "elbo", "kl_cont", "kl_disc", "capacity_cont", "capacity_disc",
                     "temperature"):
            assert math.isfinite(values[f"{split}/{name}"]), (split, name)
        assert values[f"{split}/kl"] == pytest.approx(values[f"{split}/kl_cont"] + values[f"{split}/kl_disc"],
                                                      rel=1e-5)
        assert values[f"{split}/beta"] == 30.0
    assert record["train"]["train/capacity_cont"] == pytest.approx(5.0 * 3 / 25_000)  # at step 3
    assert record["train"]["train/temperature"] == pytest.approx(0.67 * math.exp(-0.15))
    state = torch.load(record["test_ckpt"], weights_only=True)["state_dict"]
    assert state["model.code.temperature"].item() == pytest.approx(0.67 * math.exp(-0.15))

    run_evaluation(compose_eval(tmp_path, [f"ckpt_path={record['test_ckpt']}", "iw_k=10"]))
    scores = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert scores["status"] == "completed"
    assert math.isfinite(scores["test"]["test/neg_elbo"])
    assert scores["test"].get("test/neg_iw_bound") is None  # no −L_K for a relaxed categorical (not variational)

    import vaelab

    trained = vaelab.load(record["test_ckpt"])
    assert isinstance(trained.code, JointCode) and trained.code.continuous_dim == 10
    samples = trained.sample(4, torch.Generator().manual_seed(0))
    assert samples.shape == (4, 1, 8, 8) and 0 <= samples.min() and samples.max() <= 1
