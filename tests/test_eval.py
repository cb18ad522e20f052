"""src/eval.py end to end: a finished training run's checkpoint evaluates to that run's test numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import compose_eval, compose_train

from vaelab.errors import ConfigError
from vaelab.tasks.evaluate import WRITE_KEYS, data_config, run_evaluation
from vaelab.tasks.train import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    # eval batches of 100: the 360 test images come as 100, 100, 100, 60 (a ragged last batch), in training and eval
    train(compose_train(tmp, ["logger=none", "callbacks=minimal", "trainer.max_epochs=2", "data.eval_batch_size=100",
                              "trainer.limit_test_batches=1.0"]))
    return tmp, json.loads((tmp / "run" / "metrics.json").read_text())


def test_eval_reproduces_the_runs_test_elbo_and_writes_metrics(trained, tmp_path):
    run_tmp, record = trained
    cfg = compose_eval(run_tmp, [f"ckpt_path={record['test_ckpt']}", "iw_k=50"])
    neg_elbo = run_evaluation(cfg)
    result = json.loads((run_tmp / "eval" / "metrics.json").read_text())
    assert result["status"] == "completed" and result["data"] == "DigitsDataModule"
    test = result["test"]
    assert test["test/num_images"] == 360
    assert neg_elbo == test["test/neg_elbo"]
    # the same images, the same weights: only the single-sample Monte-Carlo draw of z differs
    assert neg_elbo == pytest.approx(-record["test"]["test/elbo"], rel=0.02)
    assert test["test/kl"] == pytest.approx(record["test"]["test/kl"], rel=1e-4)  # analytic: no sampling
    assert test["test/neg_iw_bound"] < test["test/neg_elbo"]  # L_50 is the tighter bound
    assert test["test/bits_per_dim"] == pytest.approx(neg_elbo / (64 * 0.6931471805599453))
    assert test["test/active_units"] == record["test"]["test/active_units"]


def test_eval_refuses_data_of_another_shape(trained, tmp_path):
    run_tmp, record = trained
    cfg = compose_eval(tmp_path, [f"ckpt_path={record['test_ckpt']}", "data=fashion_mnist"])
    with pytest.raises(ConfigError, match=r"\(1, 28, 28\).*\(1, 8, 8\)"):
        run_evaluation(cfg)


def test_eval_needs_an_existing_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="ckpt_path"):
        run_evaluation(compose_eval(tmp_path, ["ckpt_path=/no/such/file.ckpt"]))
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["status"] == "failed"


def test_choosing_the_same_data_again_keeps_the_checkpoints_split_and_binarisation(trained, tmp_path, caplog):
    run_tmp, record = trained
    stored = torch.load(record["test_ckpt"], weights_only=True)["vaelab_data"]
    stored = {**stored, "binarize": "static", "split_seed": 7}  # as a model trained with those would have stored
    chosen = compose_eval(tmp_path, ["ckpt_path=x", "data=digits", "data.eval_batch_size=50"]).data
    assert chosen.binarize == "none"  # the group's default, which must not silently win
    path = Path(record["test_ckpt"])
    merged = data_config(chosen, stored, path, ["ckpt_path=x", "data=digits", "data.eval_batch_size=50"])
    assert merged.binarize == "static" and merged.split_seed == 7 and merged.eval_batch_size == 50
    assert "binarize='static' (the data group has 'none')" in caplog.text  # said, not silent
    assert merged.data_dir == stored["data_dir"]  # it exists here
    moved = data_config(chosen, {**stored, "data_dir": "/no/such/folder"}, path, ["data=digits"])
    assert moved.data_dir == chosen.data_dir and moved.binarize == "static"  # a checkpoint from another machine
    # what data is the checkpoint's; where to write (its cache folder, a download) never is
    assert data_config(None, stored, path, []) == {k: v for k, v in stored.items() if k not in WRITE_KEYS}
    # keys without a group change just those keys; a missing stored folder gives way to this machine's default
    keys = compose_eval(tmp_path, ["ckpt_path=x", "+data.eval_batch_size=20"]).data
    only = data_config(keys, {**stored, "data_dir": "/no/such/folder"}, path, [], local_data_dir="/here")
    assert only.eval_batch_size == 20 and only.binarize == "static" and only.data_dir == "/here"
    assert data_config(None, {**stored, "data_dir": "/no"}, path, [], local_data_dir="/here").data_dir == "/here"
    other = compose_eval(tmp_path, ["ckpt_path=x", "data=mnist"]).data  # another data set: taken as chosen
    assert data_config(other, stored, path, ["data=mnist"]) == other
    with pytest.raises(ConfigError, match="data=<name>"):
        data_config(None, None, path, [])
