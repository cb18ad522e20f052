"""Disentanglement scores in training and evaluation: callbacks.disentanglement (val/mig … every few validation
epochs, test/… when testing) on a tiny shapes data set under Lightning, a no-op on data without factors, and
src/eval.py's metrics.json for a shapes checkpoint (vaelab.metrics.factors behind both)."""

from __future__ import annotations

import json

import lightning
import pytest
import torch
from conftest import compose_train
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_eval import compose_eval

from vaelab.callbacks.disentanglement import DisentanglementMetrics
from vaelab.data import DigitsDataModule, ShapesDataModule
from vaelab.metrics import factors
from vaelab.models import Autoencoder
from vaelab.tasks.evaluate import run_evaluation
from vaelab.tasks.train import train
from vaelab.training import AutoencoderModule

TINY = {"image_size": 16, "n_scales": 2, "n_orientations": 4, "n_positions": 4}  # 3 * 2 * 4 * 4 * 4 = 384 images
TINY_OVERRIDES = [f"data.{k}={v}" for k, v in TINY.items()]
FEW_VOTES = {"n_train_votes": 40, "n_eval_votes": 20, "batch_size": 16, "n_variance_estimate": 200}
SCORES = ("mig", "factor_vae", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness")


def tiny_shapes(tmp_path) -> ShapesDataModule:
    return ShapesDataModule(data_dir=tmp_path / "data", batch_size=32, eval_batch_size=64, val_fraction=0.25, **TINY)


def fit(tmp_path, datamodule, callbacks, max_epochs: int = 3, test: bool = True):
    lightning.seed_everything(0, verbose=False)
    side = datamodule.image_shape[-1]
    model = AutoencoderModule(image_shape=[1, side, side], latent_dim=4)
    trainer = lightning.Trainer(
        accelerator="cpu", devices=1, max_epochs=max_epochs, limit_train_batches=2, limit_val_batches=1,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        logger=TensorBoardLogger(save_dir=tmp_path, name="tb"), default_root_dir=tmp_path, callbacks=callbacks,
    )
    trainer.fit(model, datamodule=datamodule)
    if test:
        trainer.test(model, datamodule=datamodule, verbose=False)
    return trainer, model


def scalars(trainer) -> EventAccumulator:
    acc = EventAccumulator(trainer.logger.log_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return acc


def test_scores_are_logged_every_n_epochs_and_at_the_last_and_when_testing(tmp_path):
    callback = DisentanglementMetrics(every_n_epochs=2, factor_vae=FEW_VOTES)
    trainer, _ = fit(tmp_path, tiny_shapes(tmp_path), [callback], max_epochs=3)
    acc = scalars(trainer)
    val_steps = [e.step for e in acc.Scalars("val/loss")]
    assert val_steps == [1, 3, 5]
    for name in SCORES:
        # the 2nd epoch (every 2) and the 3rd (the last); no score from the sanity check
        assert [e.step for e in acc.Scalars(f"val/{name}")] == [3, 5], name
        assert all(0.0 <= e.value <= 1.0 for e in acc.Scalars(f"val/{name}")), name
        value = float(trainer.callback_metrics[f"test/{name}"])  # (metrics.json's test section reads these)
        assert 0.0 <= value <= 1.0, name
    assert callback.last_seconds is not None and callback.last_seconds < 30


def test_the_callback_is_a_no_op_on_data_without_factors(tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("scored data without factors")

    monkeypatch.setattr("vaelab.callbacks.disentanglement.disentanglement_metrics", never)
    datamodule = DigitsDataModule(data_dir=tmp_path / "data", batch_size=64)
    assert not factors.has_factors(datamodule)
    trainer, _ = fit(tmp_path, datamodule, [DisentanglementMetrics(every_n_epochs=1)], max_epochs=2)
    assert not [k for k in trainer.callback_metrics if k.split("/")[-1] in SCORES]
    assert factors.disentanglement_metrics(None, datamodule) == {}


def test_scoring_does_not_change_the_training_trajectory(tmp_path):
    _, scored = fit(tmp_path / "on", tiny_shapes(tmp_path), [DisentanglementMetrics(1, factor_vae=FEW_VOTES)],
                    max_epochs=2, test=False)
    _, plain = fit(tmp_path / "off", tiny_shapes(tmp_path), [], max_epochs=2, test=False)
    for name, value in scored.state_dict().items():
        torch.testing.assert_close(value, plain.state_dict()[name], atol=0, rtol=0, msg=name)
    assert scored.training == plain.training


def test_scores_are_the_same_on_every_call_and_a_collapsed_code_scores_zero(tmp_path):
    datamodule = tiny_shapes(tmp_path)
    torch.manual_seed(0)
    model = Autoencoder(image_shape=[1, 16, 16], latent_dim=4)
    first = factors.disentanglement_metrics(model, datamodule, "val", factor_vae=FEW_VOTES, dci=False)
    assert set(first) == {"mig", "factor_vae", "sap"}
    assert first == factors.disentanglement_metrics(model, datamodule, "val", factor_vae=FEW_VOTES, dci=False)
    with torch.no_grad():  # every input to the same code: nothing to vote with
        for p in model.encoder.parameters():
            p.zero_()
    collapsed = factors.disentanglement_metrics(model, datamodule, "test", factor_vae=FEW_VOTES)
    assert collapsed["factor_vae"] == 0.0 and collapsed["mig"] == 0.0


def test_train_and_eval_write_the_scores_into_metrics_json(tmp_path, capsys):
    overrides = ["data=shapes", *TINY_OVERRIDES, "logger=none", "callbacks=[minimal,disentanglement]",
                 "trainer.max_epochs=2", "trainer.limit_test_batches=1.0", "model.latent_dim=4",
                 *(f"callbacks.disentanglement.factor_vae.{k}={v}" for k, v in FEW_VOTES.items())]
    train(compose_train(tmp_path, overrides))
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed"
    for split in ("val", "test"):
        for name in SCORES:
            assert 0.0 <= record[split][f"{split}/{name}"] <= 1.0, (split, name)

    # (eval.py's DCI uses the protocol's gradient-boosted trees by default, training a small forest: the same here)
    cfg = compose_eval(tmp_path, [f"ckpt_path={record['test_ckpt']}", "iw_k=0", "disentanglement.dci_predictor=forest",
                                  *(f"disentanglement.factor_vae.{k}={v}" for k, v in FEW_VOTES.items())])
    run_evaluation(cfg)
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert result["status"] == "completed" and result["data"] == "ShapesDataModule"
    for name in SCORES:
        # the same weights, sample, seeds and options: the training run's test scores (which Lightning logged as
        # float32)
        assert result["test"][f"test/{name}"] == pytest.approx(record["test"][f"test/{name}"], abs=1e-6), name
    table = capsys.readouterr().out
    for name in SCORES:
        assert f"\n{name} " in table


@pytest.mark.slow
def test_under_ddp_every_rank_logs_rank_zeros_scores(tmp_path, python):
    # two CPU processes: rank 0 scores, broadcasts, and both ranks log the same values (sync_dist averages equal
    # numbers), so metrics.json (written by rank 0) and ModelCheckpoint see them
    import subprocess

    from conftest import ROOT

    run = tmp_path / "run"
    result = subprocess.run(
        [python, "src/train.py", "data=shapes", *TINY_OVERRIDES, "trainer=ddp_cpu", "trainer.max_epochs=1",
         "logger=none", "callbacks=[minimal,disentanglement]", "+trainer.enable_progress_bar=false",
         "callbacks.model_checkpoint.monitor=val/mig", "callbacks.model_checkpoint.mode=max",
         *(f"callbacks.disentanglement.factor_vae.{k}={v}" for k, v in FEW_VOTES.items()),
         f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["best"]["monitor"] == "val/mig" and record["best"]["score"] == record["val"]["val/mig"]
    for split in ("val", "test"):
        for name in SCORES:
            assert 0.0 <= record[split][f"{split}/{name}"] <= 1.0, (split, name)
