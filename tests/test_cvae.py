"""The conditional VAE (Sohn et al. 2015): the label reaches encoder and decoder, samples follow the requested class,
and a model without its labels, or labels without a model that takes them, is refused by name. Each test names the
plausible wrong version it catches."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import compose_eval, compose_train
from omegaconf import OmegaConf

from vaelab.errors import ConfigError
from vaelab.metrics.likelihood import evaluate, importance_weighted_bound
from vaelab.models import Autoencoder
from vaelab.rules import validate_config
from vaelab.tasks.evaluate import run_evaluation
from vaelab.tasks.train import conditioning_classes, train

SMALL_NET = {"encoder": {"_target_": "vaelab.models.nets.MLPEncoder", "hidden_dims": [16]},
             "decoder": {"_target_": "vaelab.models.nets.MLPDecoder", "hidden_dims": [16]}}


def cvae(seed: int = 0) -> Autoencoder:
    torch.manual_seed(seed)
    return Autoencoder([1, 8, 8], latent_dim=3, net=SMALL_NET, num_classes=4).eval()


def test_the_label_reaches_the_decoder_so_changing_it_changes_a_sample():
    """Catches a decoder that never sees y (the one-hot not appended, or appended and sliced off): the same z with
    two labels would decode to the same image."""
    model = cvae()
    z = torch.randn(1, 3).expand(4, 3)
    images = model.mean(model.decode(z, labels=torch.arange(4)))
    assert all((images[0] - images[i]).abs().max() > 1e-4 for i in (1, 2, 3))
    seeded = [model.sample(2, generator=torch.Generator().manual_seed(5), labels=c) for c in (0, 3)]
    assert (seeded[0] - seeded[1]).abs().max() > 1e-4


def test_the_label_reaches_the_encoder():
    """Catches an encoder that ignores y (q(z|x) instead of q(z|x, y))."""
    model = cvae()
    x = torch.rand(1, 1, 8, 8).expand(4, 1, 8, 8)
    mu, _ = model.encode(x, labels=torch.arange(4))
    assert all((mu[0] - mu[i]).abs().max() > 1e-5 for i in (1, 2, 3))


def test_a_conditional_model_refuses_a_pass_without_labels_and_bad_labels():
    model = cvae()
    x = torch.rand(3, 1, 8, 8)
    with pytest.raises(ValueError, match=r"conditional \(model.num_classes=4\): pass the class labels"):
        model(x)
    with pytest.raises(ValueError, match=r"class indices in \[0, 4\)"):
        model(x, labels=torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match="2 labels for 3 images"):
        model(x, labels=torch.tensor([0, 1]))


def test_sampling_without_labels_draws_the_classes_with_the_generator():
    """An unconditional score of a conditional model's samples needs classes drawn at random, reproducibly."""
    model = cvae()
    a = model.sample(6, generator=torch.Generator().manual_seed(1))
    b = model.sample(6, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_the_bound_of_a_conditional_model_is_on_log_p_x_given_y():
    """Catches the importance-weighted bound decoding without the labels (or with labels not repeated per draw):
    L_1's mean must agree with the conditional ELBO of the same labels, and differ for other labels."""
    model = cvae(1)
    x = torch.bernoulli(torch.full((6, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    with torch.no_grad():
        elbo = torch.stack([model(x, labels=y).elbo for _ in range(200)]).mean(0)
        l1 = torch.stack([importance_weighted_bound(model, x, 1, labels=y) for _ in range(200)]).mean(0)
        other = torch.stack([importance_weighted_bound(model, x, 1, labels=(y + 1) % 4) for _ in range(200)]).mean(0)
    torch.testing.assert_close(l1, elbo, atol=0.15, rtol=0)
    assert (l1 - other).abs().max() > 0.3


def test_evaluate_gives_a_conditional_model_the_batches_labels():
    model = cvae(2)
    x = torch.rand(4, 1, 8, 8)
    metrics = evaluate(model, [(x, torch.tensor([0, 1, 2, 3]))], k=3)
    assert metrics["num_images"] == 4 and metrics["neg_iw_bound"] is not None


def test_num_classes_is_checked_by_name_before_anything_is_built():
    cfg = OmegaConf.create({"model": {"num_classes": 1}})
    with pytest.raises(ConfigError, match=r"model.num_classes"):
        validate_config(cfg, ["model.num_classes"])
    validate_config(OmegaConf.create({"model": {"num_classes": "auto"}}), ["model.num_classes"])


@pytest.mark.parametrize("count", [0, 1])
def test_cvae_on_data_without_class_labels_is_refused_naming_the_key(count):
    data = SimpleNamespace(num_classes=count)
    cfg = OmegaConf.create({"data": {"_target_": "vaelab.data.celeba.CelebA"}})
    with pytest.raises(ConfigError, match=r"model.num_classes=auto .* CelebA has"):
        conditioning_classes(data, cfg)


def test_a_quantised_code_cannot_be_conditional():
    with pytest.raises(ValueError, match="model.num_classes makes the model conditional"):
        Autoencoder([1, 8, 8], latent_dim=4, code={"_target_": "vaelab.models.quantizer.QuantizedCode",
                                                   "num_codes": 8}, num_classes=3)


def test_cvae_trains_draws_one_row_per_class_and_its_samples_show_the_requested_class(tmp_path):
    """After a short training on the 8x8 digits the digits classifier puts most conditional samples in the class
    asked for (chance: 0.1). Catches labels lost between the data and the model's pass in training (the decoder
    would learn to ignore them: accuracy near chance) and eval.py not asking for them."""
    cfg = compose_train(tmp_path, ["model=cvae", "model.latent_dim=4", "trainer.max_epochs=6",
                                   "trainer.limit_train_batches=1.0", "callbacks=[minimal,samples]",
                                   "callbacks.samples.every_n_epochs=6", "logger=tensorboard"])
    train(cfg)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0})
    acc.Reload()
    assert "val/samples" in acc.Tags()["images"]
    run_evaluation(compose_eval(tmp_path, [f"ckpt_path={record['test_ckpt']}", "iw_k=2",
                                           "sample_quality.n=500", "representation=null"]))
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"]
    assert evaluated["test/conditional_accuracy"] > 0.5
    assert evaluated["test/neg_iw_bound"] is not None


def test_the_samples_view_draws_one_row_of_each_class():
    """Catches the samples view drawing a conditional model's samples with random classes (a grid that says
    nothing of what each class looks like)."""
    from vaelab.dashboard.images import PriorSamples

    model = cvae()
    asked = []
    sample = model.sample

    def spy(n, generator=None, sampler=None, labels=None):
        asked.append(labels)
        return sample(n, generator=generator, sampler=sampler, labels=labels)

    model.sample = spy
    drawn = []
    writer = SimpleNamespace(add_image=lambda tag, image, step, dataformats: drawn.append((tag, image.shape)))
    view = PriorSamples(nrow=3, num_images=8)
    view.class_names = ["a", "b", "c", "d"]
    view.in_background = lambda render: render()
    with torch.no_grad():
        view.draw(writer, "val", 0, model, None, None, None)
    assert asked[0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert drawn[0][0] == "val/samples"
