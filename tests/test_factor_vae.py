"""FactorVAE (Kim & Mnih 2018): the discriminator's TC estimate, the dimension-wise permutation, the discriminator's
loss, the two optimiser steps of the Lightning module's manual optimisation, and the family through the config
(training, evaluation, exact resume, LR schedulers, the divergence check, refused gradient clipping)."""

from __future__ import annotations

import json
import math
import types

import pytest
import torch
from conftest import compose_eval, compose_train, constant_discriminator
from lightning import Callback
from torch.optim.lr_scheduler import ReduceLROnPlateau

from vaelab.errors import ConfigError, DivergedError
from vaelab.models.objectives import FactorVAE
from vaelab.models.objectives.factor_vae import (
    Discriminator,
    discriminator_accuracy,
    discriminator_loss,
    permute_dims,
    split_batch,
)
from vaelab.models.schedules import ConstantBeta
from vaelab.tasks.evaluate import run_evaluation
from vaelab.tasks.train import train
from vaelab.training import AutoencoderModule


def pass_of(z: torch.Tensor) -> types.SimpleNamespace:
    """What the objective reads of a model's pass: the codes, and per-image recon and KL (here 2 and 0.5 nats)."""
    return types.SimpleNamespace(z=z, recon=torch.full((len(z),), 2.0), kl=torch.full((len(z),), 0.5))


# ------------------------------------------------------------------------------------------- the estimator's pieces
def test_the_tc_estimate_is_the_mean_logit_of_the_discriminator():
    """TC ≈ E_q[log(D / (1 − D))]: a discriminator that calls every code a sample of q(z) with probability σ(c) says
    TC = c (not σ(c), nor log σ(c)); the loss adds γ·TC to the ELBO's recon + KL."""
    objective = FactorVAE(latent_dim=3, schedule=ConstantBeta(7.0))
    constant_discriminator(objective, 1.3)
    value = objective(None, None, pass_of(torch.randn(10, 3)), step=0)
    assert value.terms["tc"].item() == pytest.approx(1.3, abs=1e-6)
    assert value.loss.item() == pytest.approx(2.0 + 0.5 + 7.0 * 1.3, abs=1e-5)
    assert objective.weights(0) == {"beta": 7.0}
    # and for a discriminator that is not constant, the batch mean of its logits
    objective = FactorVAE(latent_dim=3)
    z = torch.randn(10, 3)
    torch.testing.assert_close(objective(None, None, pass_of(z), 0).terms["tc"], objective.discriminator(z).mean())


def test_the_permutation_keeps_every_marginal_and_breaks_the_dependence():
    g = torch.Generator().manual_seed(0)
    n = 4000
    first = torch.randn(n, generator=g)
    z = torch.stack([first, first + 0.1 * torch.randn(n, generator=g), -first, torch.randn(n, generator=g)], dim=1)
    permuted = permute_dims(z, generator=g)
    # every column holds the same values (each dimension's marginal is kept exactly), in another order
    torch.testing.assert_close(permuted.sort(dim=0).values, z.sort(dim=0).values)
    assert (permuted != z).float().mean() > 0.99
    before, after = torch.corrcoef(z.T), torch.corrcoef(permuted.T)
    assert before[0, 1] > 0.99 and before[0, 2] < -0.99
    off_diagonal = after[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 4 / math.sqrt(n)  # independent columns: |r| ~ 1/sqrt(n)


def test_the_batch_is_split_in_halves_and_a_single_code_plays_both_parts():
    z = torch.arange(10.0).reshape(5, 2)
    joint, product = split_batch(z)
    assert joint.tolist() == z[:2].tolist() and product.tolist() == z[2:].tolist()
    one = z[:1]
    assert all(part.tolist() == one.tolist() for part in split_batch(one))


def test_the_discriminator_loss_is_the_two_class_cross_entropy_with_q_z_labelled_one():
    g = torch.Generator().manual_seed(1)
    joint, product = torch.randn(6, generator=g), torch.randn(9, generator=g)  # (odd sizes: each class weighs 1/2)
    expected = -0.5 * (torch.sigmoid(joint).log().mean() + (1 - torch.sigmoid(product)).log().mean())
    torch.testing.assert_close(discriminator_loss(joint, product), expected)
    assert discriminator_loss(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(math.log(2))
    # a discriminator that is sure and right costs nothing, sure and wrong a lot
    assert discriminator_loss(torch.full((4,), 20.0), torch.full((4,), -20.0)) < 1e-6
    assert discriminator_loss(torch.full((4,), -20.0), torch.full((4,), 20.0)) > 19
    assert discriminator_accuracy(torch.tensor([1.0, 1.0, -1.0]), torch.tensor([-1.0])).item() == pytest.approx(
        0.5 * (2 / 3 + 1))


def binary_code(n: int, p_equal: float, g: torch.Generator) -> torch.Tensor:
    """Codes (z_1, z_2) in {−1, 1}², each uniform, with z_2 = z_1 with probability ``p_equal``:
    TC = Σ q log(q / q_1 q_2) = p log 2p + (1 − p) log 2(1 − p) nats (0 for p = ½, the factorised code)."""
    first = torch.randint(0, 2, (n,), generator=g).float() * 2 - 1
    same = torch.rand(n, generator=g) < p_equal
    return torch.stack([first, torch.where(same, first, -first)], dim=1)


@pytest.fixture
def one_thread():
    """Tiny tensors: a second thread only adds overhead on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("p_equal", [0.9, 0.5])
def test_a_discriminator_trained_on_the_codes_estimates_their_total_correlation(p_equal, one_thread):
    """Monte-Carlo agreement: D trained as FactorVAE trains it (the batch's halves, one permuted, the two-class
    cross-entropy, the paper's Adam betas) recovers the known TC of a correlated code (0.368 nats) and of a
    factorised one (0). Over seeds the estimates spread by about ±0.012 and ±0.001 nats."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    objective = FactorVAE(latent_dim=2, hidden_dims=[32])
    optimizer = torch.optim.Adam(objective.adversary_parameters(), lr=1e-2, betas=(0.5, 0.9))
    for step in range(300):
        if step == 150:
            optimizer.param_groups[0]["lr"] = 1e-3
        joint, product = split_batch(binary_code(1024, p_equal, g))
        loss = discriminator_loss(objective.discriminator(joint), objective.discriminator(permute_dims(product, g)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # E_q[logit D] over q exactly: the four codes in proportion to their probabilities (p = 0.9: 9:9:1:1)
    counts = [round(10 * p_equal)] * 2 + [10 - round(10 * p_equal)] * 2
    points = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]]).repeat_interleave(
        torch.tensor(counts), dim=0)
    with torch.no_grad():
        estimate = objective(None, None, pass_of(points), 0).terms["tc"].item()
    exact = p_equal * math.log(2 * p_equal) + (1 - p_equal) * math.log(2 * (1 - p_equal))
    assert estimate == pytest.approx(exact, abs=0.03 if p_equal != 0.5 else 0.005)


def test_bad_settings_are_refused_with_the_key():
    with pytest.raises(ValueError, match="model.objective.optimizer"):
        FactorVAE(latent_dim=2, optimizer={"lr": 1e-4})
    with pytest.raises(ValueError, match="hidden_dims"):
        Discriminator(2, [])
    objective = FactorVAE(latent_dim=3)
    with pytest.raises(ValueError, match="model.objective.latent_dim"):
        objective(None, None, pass_of(torch.randn(4, 5)), 0)


# ------------------------------------------------------------------------------------------------ the two steps
def factor_vae_module(**kwargs) -> AutoencoderModule:
    objective = {"_target_": "vaelab.models.objectives.FactorVAE", "latent_dim": 2, "hidden_dims": [16]}
    return AutoencoderModule(image_shape=[1, 8, 8], latent_dim=2, beta=5.0, objective=objective,
                             net={"encoder": {"_target_": "vaelab.models.nets.MLPEncoder", "hidden_dims": [16]},
                                  "decoder": {"_target_": "vaelab.models.nets.MLPDecoder", "hidden_dims": [16]}},
                             **kwargs)


def test_only_an_objective_with_an_adversary_is_optimised_manually():
    assert not factor_vae_module().automatic_optimization
    assert AutoencoderModule(image_shape=[1, 8, 8]).automatic_optimization


class StepWatch(Callback):
    """Snapshots of every weight just before each optimiser step, and the gradients each step applies."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        adversary = {id(p) for p in pl_module.objective.adversary_parameters()}
        which = "adversary" if any(id(p) in adversary for g in optimizer.param_groups for p in g["params"]) \
            else "model"
        self.steps.append({
            "optimizer": which,
            "model": [p.detach().clone() for p in pl_module.model.parameters()],
            "adversary": [p.detach().clone() for p in pl_module.objective.adversary_parameters()],
            "grads": [None if p.grad is None else p.grad.clone() for p in pl_module.objective.adversary_parameters()],
        })

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({"optimizer": "end", "model": [p.detach().clone() for p in pl_module.model.parameters()],
                           "adversary": [p.detach().clone() for p in pl_module.objective.adversary_parameters()]})


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_each_step_changes_only_its_own_weights_and_the_adversary_sees_only_its_own_gradients(tmp_path):
    from lightning import Trainer
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    module = factor_vae_module()
    expected = []  # the gradients of the discriminator's own loss, taken before any step of the batch
    forward = module.objective.forward

    def spy(model, x, out, step):
        value = forward(model, x, out, step)
        if module.training:
            expected.append(torch.autograd.grad(value.adversary_loss, module.objective.adversary_parameters(),
                                                retain_graph=True))
        return value

    module.objective.forward = spy
    watch = StepWatch()
    trainer = Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[watch], limit_val_batches=0, accelerator="cpu")
    loader = DataLoader(TensorDataset(torch.rand(16, 1, 8, 8)), batch_size=8)
    trainer.fit(module, train_dataloaders=loader)
    assert trainer.global_step == 2  # the batches: the discriminator's steps are not optimisation steps
    assert [s["optimizer"] for s in watch.steps] == ["model", "adversary", "end"] * 2
    for batch in range(2):
        model_step, adversary_step, end = watch.steps[3 * batch: 3 * batch + 3]
        # the model's step changed the model and not the discriminator; the discriminator's step the reverse
        assert not same(model_step["model"], adversary_step["model"])
        assert same(model_step["adversary"], adversary_step["adversary"])
        assert same(adversary_step["model"], end["model"])
        assert not same(adversary_step["adversary"], end["adversary"])
        # the discriminator stepped on the gradients of its own loss alone, none of the VAE loss's γ·TC
        for got, want in zip(adversary_step["grads"], expected[batch], strict=True):
            torch.testing.assert_close(got, want)


# ------------------------------------------------------------------------------------------ through the config
STEP_LR = ["+model.scheduler._target_=torch.optim.lr_scheduler.StepLR", "+model.scheduler._partial_=true",
           "+model.scheduler.step_size=1", "+model.scheduler.gamma=0.5"]


def test_the_family_trains_through_the_config_evaluates_and_resumes_exactly(tmp_path):
    """``model=factor_vae`` on the digits logs its terms, evaluates with eval.py, and a run resumed from a last.ckpt
    is identical to an uninterrupted one (tests/test_resume_exact.py's comparison, in one process: 3 epochs straight,
    against 1 epoch and then 2 more from its last.ckpt, saved at the end of epoch 0 as a killed run leaves it), with
    both optimisers' states and an LR scheduler stepped once an epoch."""
    common = ["model=factor_vae", "logger=none", "callbacks=minimal", "data.binarize=dynamic", *STEP_LR]
    whole, first = tmp_path / "whole", tmp_path / "first"
    train(compose_train(whole, [*common, "trainer.max_epochs=3"]))
    reference = json.loads((whole / "run" / "metrics.json").read_text())
    assert reference["status"] == "completed" and reference["global_step"] == 9  # one step per batch
    for stage in ("train", "val", "test"):
        values = reference[stage]
        for term in ("tc", "disc_loss", "disc_accuracy", "elbo", "kl"):
            assert math.isfinite(values[f"{stage}/{term}"]), (stage, term)
        assert values[f"{stage}/beta"] == 10.0
        assert 0 <= values[f"{stage}/disc_accuracy"] <= 1
    val = reference["val"]  # exact epoch means: the loss is the mean of recon + KL + γ·TC
    assert val["val/loss"] == pytest.approx(val["val/recon"] + val["val/kl"] + 10.0 * val["val/tc"], rel=1e-5)
    assert any(k.startswith("objective.discriminator.") for k in torch.load(
        reference["test_ckpt"], weights_only=True)["state_dict"])
    run_evaluation(compose_eval(whole, [f"ckpt_path={reference['test_ckpt']}", "iw_k=10"]))
    scores = json.loads((whole / "eval" / "metrics.json").read_text())
    assert scores["status"] == "completed"
    assert scores["test"]["test/neg_elbo"] == pytest.approx(-reference["test"]["test/elbo"], rel=0.05)

    train(compose_train(first, [*common, "trainer.max_epochs=1", "test=false"]))
    last = first / "run" / "checkpoints" / "last.ckpt"
    train(compose_train(tmp_path / "resumed", [*common, "trainer.max_epochs=3", f"ckpt_path={last}"]))
    after = json.loads((tmp_path / "resumed" / "run" / "metrics.json").read_text())
    assert after["global_step"] == reference["global_step"]
    for key in ("train", "val", "test"):  # bit for bit
        assert after[key] == reference[key], key
    ours = torch.load(last, weights_only=True)  # (a resumed fit goes on in the run folder of its checkpoint)
    theirs = torch.load(whole / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    for name, tensor in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][name], tensor), name
    assert len(ours["optimizer_states"]) == len(theirs["optimizer_states"]) == 2
    for mine, reference_state in zip(ours["optimizer_states"], theirs["optimizer_states"], strict=True):
        assert mine["param_groups"] == reference_state["param_groups"]
        for a, b in zip(mine["state"].values(), reference_state["state"].values(), strict=True):
            assert all(torch.equal(a[k], b[k]) for k in b)
    # the scheduler stepped once an epoch, in both: the model's learning rate halved three times, D's untouched
    assert ours["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(1e-3 / 8)
    assert ours["optimizer_states"][1]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    assert ours["lr_schedulers"] == theirs["lr_schedulers"]


class RecordingPlateau(ReduceLROnPlateau):
    """A ReduceLROnPlateau that keeps the values it was stepped with."""

    seen: list[float] = []

    def step(self, metrics, *args, **kwargs) -> None:
        RecordingPlateau.seen.append(float(metrics))
        super().step(metrics, *args, **kwargs)


def test_a_plateau_scheduler_watches_the_monitor_in_manual_optimisation(tmp_path):
    RecordingPlateau.seen = []
    cfg = compose_train(tmp_path, ["model=factor_vae", "logger=csv", "callbacks=minimal", "trainer.max_epochs=2",
                                   "+model.scheduler._target_=test_factor_vae.RecordingPlateau",
                                   "+model.scheduler._partial_=true", "+model.scheduler.mode=max"])
    train(cfg)
    import csv

    with (tmp_path / "run" / "csv" / "metrics.csv").open() as fh:
        elbos = [float(row["val/elbo"]) for row in csv.DictReader(fh) if row.get("val/elbo")]
    assert RecordingPlateau.seen == pytest.approx(elbos[:2])  # once an epoch, the epoch's val/elbo
    # without validation there is nothing to watch: one message naming the key, not a plateau that never moves
    cfg = compose_train(tmp_path / "no_val", ["model=factor_vae", "logger=none", "callbacks=minimal",
                                              "data.val_fraction=0", "+model.scheduler._partial_=true",
                                              "+model.scheduler._target_=torch.optim.lr_scheduler.ReduceLROnPlateau"])
    with pytest.raises(ConfigError, match="ReduceLROnPlateau on model.monitor=val/elbo, which has not been logged"):
        train(cfg)


def test_gradient_clipping_is_refused_with_the_key_and_divergence_is_still_caught(tmp_path):
    with pytest.raises(ConfigError, match=r"trainer.gradient_clip_val=1: the objective FactorVAE trains an "
                                          r"adversary"):
        train(compose_train(tmp_path / "clip", ["model=factor_vae", "logger=none", "callbacks=minimal",
                                                "+trainer.gradient_clip_val=1.0"]))
    with pytest.raises(ConfigError, match=r"trainer.accumulate_grad_batches=2: .* accumulate gradients"):
        train(compose_train(tmp_path / "accumulate", ["model=factor_vae", "logger=none", "callbacks=minimal",
                                                      "+trainer.accumulate_grad_batches=2"]))
    # the loss is checked before each backward pass (manual_backward runs on_before_backward)
    cfg = compose_train(tmp_path / "nan", ["model=factor_vae", "model.optimizer.lr=100", "trainer.max_epochs=3",
                                           "logger=none", "callbacks=minimal"])
    with pytest.raises(DivergedError) as caught:
        train(cfg)
    message = str(caught.value)
    assert message.startswith("Training diverged at step 1 (epoch 0): the loss is not finite (")
    assert "gradient_clip_val" not in message  # (advice it could not follow)
    assert json.loads((tmp_path / "nan" / "run" / "metrics.json").read_text())["status"] == "diverged"


# ------------------------------------------------------------- batches the discriminator cannot split (issue 24, 3)
def test_a_batch_too_small_for_both_classes_is_refused_before_training(tmp_path):
    """A batch of 1 code gives D the same code as both classes, one of 2 an unshuffled code as the "product": the TC
    term would be meaningless, so FactorVAE refuses any setting that gives a batch of fewer than 3 codes: the batch
    sizes before anything is built, a split's last, partial batch when the data are there (the digits: 1293 train,
    144 val, 360 test images), each with one message naming the key and sizes that fit."""
    common = ["model=factor_vae", "logger=none", "callbacks=minimal", "model.objective.hidden_dims=[16]"]
    refused = {
        "data.batch_size=1": r"data.batch_size = 1 is invalid for FactorVAE: it must be an integer >= 3",
        "data.batch_size=2": r"data.batch_size = 2 is invalid for FactorVAE: it must be an integer >= 3",
        "data.eval_batch_size=2": r"data.eval_batch_size = 2 is invalid for FactorVAE: it must be an integer >= 3",
        "data.batch_size=4": r"data.batch_size = 4 .* the 1293 images of the train split leave a last batch of 1 "
                             r"code\(s\).* e.g. data.batch_size=3 or data.batch_size=5",
        "data.eval_batch_size=142": r"data.eval_batch_size = 142 .* the 144 images of the val split leave a last "
                                    r"batch of 2 code\(s\)",
    }
    for i, (setting, message) in enumerate(refused.items()):
        with pytest.raises(ConfigError, match=message):
            train(compose_train(tmp_path / str(i), [*common, setting]))
        record = json.loads((tmp_path / str(i) / "run" / "metrics.json").read_text())
        assert record["status"] == "failed" and not record.get("global_step")  # nothing trained
    # the same settings are fine for a family without a discriminator
    train(compose_train(tmp_path / "vae", ["logger=none", "callbacks=minimal", "data.batch_size=4"]))


def test_the_last_batch_of_every_process_is_checked_and_the_sizes_offered_fit_every_split():
    from vaelab.rules import factor_vae_batch_problems

    fine = {"train": 32, "val": 512, "test": 512}
    assert factor_vae_batch_problems(fine, {"train": (1293,), "val": (144,), "test": (360,)}) == []
    # two processes: training shards padded to 647 each (647 = 161 * 4 + 3: fine); val shards of 73 and 72 images
    [message] = factor_vae_batch_problems({"train": 4, "val": 71, "test": 71},
                                          {"train": (647, 647), "val": (73, 72), "test": (180, 180)})
    assert message.startswith("data.eval_batch_size = 71 is invalid for FactorVAE here: the 73 images of the val "
                              "split (each of 2 processes' share) leave a last batch of 2 code(s)")
    sizes = [int(s) for s in message.split("e.g. ")[1].replace("data.eval_batch_size=", "").split(" or ")]
    assert all(n % b == 0 or n % b >= 3 for b in sizes for n in (73, 72, 180))  # for val and test alike
    with pytest.raises(ValueError, match="training batch of 2 code"):  # (data bind could not see: refused anyway)
        FactorVAE(latent_dim=2, hidden_dims=[8])(None, None, pass_of(torch.randn(2, 2)), 0)
