"""vaelab on a GPU: every test here needs CUDA and is skipped, with the reason, where there is none (CI, the CPU
machine). ``scripts/gpu_check.sh`` runs them on a lent GPU machine (``pytest -m gpu``).

``VAELAB_GPU_TESTS_ON_CPU=1`` runs them on the CPU instead (``trainer=cpu``, ``device=cpu``): a check of the tests'
own logic before a GPU is lent, not of the GPU path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import CONF, compose_eval, compose_train
from idx import write_mnist_like

from vaelab.tasks.evaluate import run_evaluation
from vaelab.tasks.train import train

ON_CPU = os.environ.get("VAELAB_GPU_TESTS_ON_CPU") == "1"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (torch.cuda.is_available() or ON_CPU),
                       reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

GPU = ["trainer=cpu"] if ON_CPU else ["trainer=gpu"]
DEVICE = "cpu" if ON_CPU else "cuda"
#: the second stages (a prior over a first stage's codes) and the first stage each starts from
SECOND_STAGES = {"vqvae_prior": "vqvae", "vqvae2_prior": "vqvae2"}
#: every model preset that trains from scratch
FAMILIES = sorted(p.stem for p in (CONF / "model").glob("*.yaml") if p.stem not in SECOND_STAGES)


def record(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / "metrics.json").read_text())


def run(tmp_path: Path, overrides: list[str], fast: bool = True) -> dict:
    train(compose_train(tmp_path, [*GPU, "logger=none", *overrides], fast=fast))
    result = record(tmp_path)
    assert result["status"] == "completed", result.get("error")
    return result


def test_the_default_run_trains_on_the_gpu(tmp_path):
    result = run(tmp_path, ["callbacks=default", "logger=tensorboard"])
    ckpt = torch.load(result["best_ckpt"], map_location="cpu", weights_only=True)
    assert ckpt["state_dict"]["model.encoder.1.weight"].dtype == torch.float32


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_trains_on_the_gpu(tmp_path, family):
    run(tmp_path, [f"model={family}", "callbacks=minimal"])


@pytest.mark.parametrize("second", sorted(SECOND_STAGES))
def test_every_prior_stage_trains_on_the_gpu_from_its_first_stage(tmp_path, second):
    first = run(tmp_path / "one", [f"model={SECOND_STAGES[second]}", "callbacks=minimal"])
    run(tmp_path / "two", [f"model={second}", f"model.init_from={first['test_ckpt']}", "callbacks=minimal"])


@pytest.mark.parametrize("data", [
    ["data=shapes_color", "model/net=resnet", "model.likelihood=discretized_logistic"],  # colour, 8-bit likelihood
    ["data=shapes_color", "model.likelihood=gaussian_per_pixel"],
    ["data.stream=true"],  # the streamed chunks through the DataLoader's workers
], ids=["colour_resnet_logistic", "colour_gaussian", "stream"])
def test_the_colour_and_streamed_data_train_on_the_gpu(tmp_path, data):
    run(tmp_path, [*data, "callbacks=minimal", f"data.cache_dir={tmp_path / 'cache'}"])


def test_the_replica_and_the_conv_net_on_mnist_files(tmp_path):
    write_mnist_like(tmp_path / "data", n_train=300, n_test=100)
    short = ["trainer.max_epochs=1", "++trainer.limit_train_batches=3", "++trainer.limit_test_batches=1",
             f"data.data_dir={tmp_path / 'data'}"]
    run(tmp_path / "replica", ["experiment=mnist_vae_reference", *short], fast=False)
    run(tmp_path / "conv", ["experiment=mnist_conv_vae", *short], fast=False)


def test_bf16_mixed_precision_trains_and_its_elbo_is_close_to_fp32(tmp_path):
    fp32 = run(tmp_path / "fp32", ["callbacks=minimal", "trainer.max_epochs=2"])
    bf16 = run(tmp_path / "bf16", ["callbacks=minimal", "trainer.max_epochs=2", "trainer.precision=bf16-mixed"])
    assert abs(bf16["test"]["test/elbo"] - fp32["test"]["test/elbo"]) < 1.0  # 2 epochs of 3 batches: close, not equal


@pytest.mark.parametrize("loader", [["data.loader=tensor"], ["data.loader=dataloader", "data.pin_memory=true"]],
                         ids=["tensor", "dataloader-pinned"])
def test_both_loaders_serve_the_gpu(tmp_path, loader):
    run(tmp_path, ["callbacks=minimal", *loader])


def test_resume_on_the_gpu(tmp_path):
    first = run(tmp_path / "a", ["callbacks=minimal", "trainer.max_epochs=1"])
    resumed = run(tmp_path / "b", ["callbacks=minimal", "trainer.max_epochs=2", f"ckpt_path={first['last_ckpt']}"])
    assert resumed["epochs"] == 2


def test_ddp_spawn_on_one_gpu(tmp_path):
    run(tmp_path, ["trainer=ddp", "trainer.strategy=ddp_spawn", "trainer.devices=1", "callbacks=minimal",
                   *(["trainer.accelerator=cpu"] if ON_CPU else [])])


def test_eval_on_cuda_agrees_with_the_cpu_within_monte_carlo_noise(tmp_path):
    trained = run(tmp_path / "train", ["callbacks=minimal", "trainer.max_epochs=2"])
    results = {}
    for device in ("cpu", DEVICE):
        folder = tmp_path / f"eval_{device}_{len(results)}"
        run_evaluation(compose_eval(folder, [f"ckpt_path={trained['best_ckpt']}", "iw_k=200", f"device={device}",
                                             f"seed={len(results)}"]))
        results[len(results)] = json.loads((folder / "eval" / "metrics.json").read_text())["test"]
    # 360 test images: the means of one-sample −ELBO and of −L_200 differ by Monte-Carlo noise only (a few tenths)
    assert abs(results[0]["test/neg_elbo"] - results[1]["test/neg_elbo"]) < 0.5
    assert abs(results[0]["test/neg_iw_bound"] - results[1]["test/neg_iw_bound"]) < 0.2
