"""Tests that catch the seven plausible bugs of issue 16 that no earlier test caught: each was injected into the code
and seen to fail here (docs/metrics.md lists the injections). Every test's docstring names the bug it catches.

The disentanglement tests through :func:`vaelab.metrics.factors.disentanglement_metrics` use a stand-in data set
whose "images" are their own factor values (plus the split they come from and per-image noise), and stand-in models
whose μ is the factors and whose log σ² is that noise, so a right and a wrong code path give far apart scores.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from vaelab.metrics import factors as factor_scores
from vaelab.metrics.disentanglement import dci_from_importance, dci_scores, factor_vae_details
from vaelab.models.distributions import gaussian_draws, standard_normal_log_prob
from vaelab.models.importance import importance_weighted_bound, log_importance_weights
from vaelab.models.likelihoods import BernoulliLikelihood

# ---------------------------------------------------------------------------------------------------------------
# (a) the IWAE bound without its −log K
# ---------------------------------------------------------------------------------------------------------------


class ZIgnoringModel:
    """A decoder that ignores z (one fixed Bernoulli image), so p(x) = p(x | z) for every z."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits
        self.likelihood = BernoulliLikelihood()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(z), *self.logits.shape[1:]) + 0.0 * z.sum(dim=1).reshape(-1, 1, 1, 1)

    def latent_draws(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None):
        """q(z|x) = N(μ, σ²) with (μ, log σ²) = h and the prior N(0, I)."""
        z, log_q = gaussian_draws(*h.chunk(2, dim=1), n, generator)
        return z, standard_normal_log_prob(z) - log_q


@pytest.mark.parametrize("k", [2, 7, 200])
def test_the_iwae_bound_of_a_z_ignoring_decoder_with_q_the_prior_is_log_px_for_every_k(k):
    """Catches L_K without its − log K (Burda et al. 2016, eq. 8): with q(z | x) = p(z) = N(0, I) and p(x | z) not
    depending on z, every weight p(x, z_k) / q(z_k | x) equals p(x), so L_K = log p(x) exactly for every K, where
    the bug gives log p(x) + log K."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 1, 3, 4, generator=g, dtype=torch.float64)
    x = torch.bernoulli(torch.full((5, 1, 3, 4), 0.4, dtype=torch.float64), generator=g)
    model = ZIgnoringModel(logits)
    log_px = -model.likelihood.nll(logits.expand_as(x), x)
    h = torch.zeros(5, 6, dtype=torch.float64)  # μ = 0, log σ² = 0: q is the prior
    weights = log_importance_weights(model, x, h, k, generator=g)
    torch.testing.assert_close(weights, log_px.expand(k, 5), rtol=0, atol=1e-10)
    for chunk in (None, 3):
        bound = importance_weighted_bound(model, x, h, k, chunk_size=chunk, generator=g)
        torch.testing.assert_close(bound, log_px, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------------------------
# (b), (c), (d) DCI on a prescribed importance matrix: 3 code dims, 2 factors
# ---------------------------------------------------------------------------------------------------------------

#: R_jk: dim 0 mostly factor 0, dim 1 split evenly, dim 2 only factor 1. Row sums 0.8, 0.2, 0.3 (total 1.3);
#: column sums 0.7 and 0.6.
IMPORTANCE = np.array([[0.6, 0.2], [0.1, 0.1], [0.0, 0.3]])


def _one_minus_entropy(p, base):
    return 1 + sum(q * math.log(q) for q in p if q > 0) / math.log(base)


#: by hand: rows normalised to (3/4, 1/4), (1/2, 1/2), (0, 1), entropies in log base 2 (two factors), weighted by
#: the row sums over the total
DISENTANGLEMENT = (0.8 * _one_minus_entropy([0.75, 0.25], 2) + 0.2 * 0.0 + 0.3 * 1.0) / 1.3
#: columns normalised to (6/7, 1/7, 0) and (1/3, 1/6, 1/2), entropies in log base 3 (three dims), weighted by the
#: column sums over the total
COMPLETENESS = (0.7 * _one_minus_entropy([6 / 7, 1 / 7], 3) + 0.6 * _one_minus_entropy([1 / 3, 1 / 6, 1 / 2], 3)) / 1.3


def test_dci_of_a_prescribed_importance_matrix_is_the_hand_computed_value():
    """Catches (b) unnormalised importance rows (the entropy of (0.6, 0.2) instead of (3/4, 1/4)), (c) the entropy
    bases swapped (log base D = 3 for disentanglement and F = 2 for completeness: invisible when D = F, as in the
    earlier tests), and (d) disentanglement without the per-dim weights ρ_j (the plain mean over dims, 0.396)."""
    assert DISENTANGLEMENT == pytest.approx(0.346906, abs=1e-6)
    assert COMPLETENESS == pytest.approx(0.374089, abs=1e-6)
    scores = dci_from_importance(IMPORTANCE)
    assert scores["disentanglement"] == pytest.approx(DISENTANGLEMENT, abs=1e-12)
    assert scores["completeness"] == pytest.approx(COMPLETENESS, abs=1e-12)
    # the weights ρ_j: an unimportant dim that is perfectly "disentangled" must not count as a whole dim
    tilted = np.array([[0.5, 0.5], [1e-6, 0.0]])
    assert dci_from_importance(tilted)["disentanglement"] == pytest.approx(0.0, abs=1e-5)  # unweighted: 0.5


def test_dci_scores_use_the_importance_they_report():
    rng = np.random.default_rng(0)
    factors = rng.integers(0, [3, 4], size=(400, 2))
    codes = np.concatenate([factors + 0.1 * rng.standard_normal((400, 2)), rng.standard_normal((400, 1))], axis=1)
    out = dci_scores(codes, factors)
    expected = dci_from_importance(out["importance"])
    assert (out["disentanglement"], out["completeness"]) == (expected["disentanglement"], expected["completeness"])


# ---------------------------------------------------------------------------------------------------------------
# (e) the FactorVAE score taken from the training votes
# ---------------------------------------------------------------------------------------------------------------

SIZES = (3, 4, 5, 6)


def test_the_factor_vae_score_of_a_random_code_is_chance_on_fresh_votes():
    """Catches the score taken from the training votes: with 40 training votes over 40 dims of a code independent of
    the factors, the majority-vote classifier memorises its votes (training accuracy near 1), while on fresh votes it
    is right 1/F = 1/4 of the time."""
    noise = np.random.default_rng(1)
    details = factor_vae_details(lambda f: noise.standard_normal((len(f), 40)), SIZES, np.random.default_rng(2),
                                 n_train_votes=40, n_eval_votes=2000, batch_size=16, n_variance_estimate=500)
    assert details["train_accuracy"] > 0.8
    assert details["score"] == pytest.approx(1 / len(SIZES), abs=4 * math.sqrt(0.25 * 0.75 / 2000))


# ---------------------------------------------------------------------------------------------------------------
# A data set whose images are their factors, and models reading them
# ---------------------------------------------------------------------------------------------------------------

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
RENDERED = 3
N_NOISE = len(SIZES)


class SpySplits(dict):
    """The DataModule's ``splits``, remembering which splits were asked for."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.asked: set[str] = set()

    def __getitem__(self, key):
        self.asked.add(key)
        return super().__getitem__(key)


class FactorImages:
    """A stand-in DataModule with factors: an "image" is a uint8 row (factors…, split id, noise…) shaped
    ``(N, 1, 1, F + 1 + F)``; each split is its own uniform draw of factor combinations."""

    factor_sizes = SIZES
    eval_batch_size = 256

    def __init__(self, n: int = 600) -> None:
        self.noise = np.random.default_rng(4)
        draw = np.random.default_rng(5)
        self.splits = SpySplits()
        for split, sid in SPLIT_IDS.items():
            f = draw.integers(0, SIZES, size=(n, len(SIZES)))
            self.splits[split] = (self._images(f, sid), torch.from_numpy(f))
        self.splits.asked.clear()

    def _images(self, f: np.ndarray, split_id: int) -> torch.Tensor:
        noise = self.noise.integers(0, 256, size=(len(f), N_NOISE))
        rows = np.concatenate([f, np.full((len(f), 1), split_id), noise], axis=1)
        return torch.from_numpy(rows.astype(np.uint8)).reshape(len(f), 1, 1, -1)

    def setup(self) -> None:
        pass

    def convert(self, images: torch.Tensor) -> torch.Tensor:
        return images.float()

    def render(self, f: np.ndarray) -> torch.Tensor:
        return self._images(np.asarray(f), RENDERED)


class StubVAE(nn.Module):
    """encode(x) = (μ, log σ²) with μ the image's factors (a perfectly disentangled code) and log σ² its noise (a code
    unrelated to the factors); remembers the split ids of the images it encodes."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.seen: set[int] = set()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = x.reshape(len(x), -1)
        self.seen.update(int(i) for i in rows[:, len(SIZES)].unique())
        return rows[:, : len(SIZES)].double(), rows[:, len(SIZES) + 1 :].double() / 255.0


class StubWithEmbed(StubVAE):
    """The lead's new model: ``embed`` is the deterministic code; ``encode`` here returns noise in both slots."""

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return super().encode(x)[0]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = super().encode(x)[1]
        return noise, noise


FEW_VOTES = {"n_train_votes": 100, "n_eval_votes": 400, "batch_size": 16, "n_variance_estimate": 300}


def scores(model, split: str = "val", **options) -> dict[str, float]:
    return factor_scores.disentanglement_metrics(model, FactorImages(), split, factor_vae=FEW_VOTES, dci=False,
                                                 **options)


# ---------------------------------------------------------------------------------------------------------------
# (e) again, (f) and (g): through disentanglement_metrics
# ---------------------------------------------------------------------------------------------------------------


def test_the_factor_vae_score_through_the_metrics_is_from_fresh_votes():
    """Catches factors.py reporting the FactorVAE training accuracy: a code of 40 dims of noise, 40 training votes."""

    class NoiseCode(StubVAE):
        def encode(self, x):
            return torch.randn(len(x), 40, generator=generator, dtype=torch.float64), None

    generator = torch.Generator().manual_seed(6)
    votes = {"n_train_votes": 40, "n_eval_votes": 2000, "batch_size": 16, "n_variance_estimate": 300}
    value = factor_scores.disentanglement_metrics(NoiseCode(), FactorImages(), "val", factor_vae=votes,
                                                  dci=False)["factor_vae"]
    assert value == pytest.approx(0.25, abs=4 * math.sqrt(0.25 * 0.75 / 2000))


@pytest.mark.parametrize("protocol", ["disentanglement_lib", "vaelab"])
def test_the_scores_are_of_mu_not_log_sigma_squared(protocol):
    """Catches the scores computed on log σ² (``encode(x)[1]``) instead of μ: here μ is the factors themselves and
    log σ² is noise, so μ scores near 1 and log σ² near 0 (FactorVAE: near chance, 1/4)."""
    out = scores(StubVAE(), protocol=protocol)
    assert out["mig"] > 0.9 and out["factor_vae"] > 0.95
    assert out["sap"] > (0.5 if protocol == "vaelab" else 0.1)  # svm: the ends of each axis only


def test_the_scores_use_embed_where_the_model_has_it():
    """Catches encode(x)[0] used on a model that has ``embed`` (the lead's new Autoencoder): its encode is not the
    deterministic code."""
    out = scores(StubWithEmbed())
    assert out["mig"] > 0.9 and out["factor_vae"] > 0.95


@pytest.mark.parametrize("split", ["val", "test", "train"])
def test_the_scores_read_the_split_they_were_asked_for(split):
    """Catches the scores computed on the train split (or any fixed split) whatever split was asked: a spy on the
    splits handed over and on the images the model encodes (rendered images are the FactorVAE score's own)."""
    data, model = FactorImages(), StubVAE()
    factor_scores.disentanglement_metrics(model, data, split, factor_vae=FEW_VOTES, dci=False)
    assert data.splits.asked == {split}
    assert model.seen == {SPLIT_IDS[split], RENDERED}


def test_an_unknown_protocol_or_split_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown disentanglement protocol 'paper'"):
        scores(StubVAE(), protocol="paper")
    with pytest.raises(ValueError, match="split must be"):
        scores(StubVAE(), split="validation")


@pytest.mark.parametrize("protocol", ["disentanglement_lib", "vaelab"])
def test_the_protocol_reaches_every_score(protocol, monkeypatch):
    """Catches a protocol that does not reach the scores (or an explicit option that does not win over it): SAP's
    classifier and split, DCI's predictor and the FactorVAE options are the protocol's, recorded by stand-ins."""
    from vaelab.metrics.disentanglement import PROTOCOLS

    calls: dict[str, dict] = {}
    answers = {"sap_score": 0.5, "factor_vae_details": {"score": 0.5},
               "dci_scores": {"disentanglement": 0.5, "completeness": 0.5, "informativeness": 0.5}}

    def spy(name):
        def record(*args, **kwargs):
            calls[name] = kwargs
            return answers[name]

        return record

    for name in answers:
        monkeypatch.setattr(factor_scores, name, spy(name))
    chosen = PROTOCOLS[protocol]
    factor_scores.disentanglement_metrics(StubVAE(), FactorImages(200), "val", protocol=protocol,
                                          factor_vae={"n_train_votes": 20, "n_eval_votes": 20, "batch_size": None})
    assert calls["sap_score"]["classifier"] == chosen.sap_classifier
    assert calls["sap_score"]["test_fraction"] == calls["dci_scores"]["test_fraction"] == chosen.test_fraction
    assert calls["dci_scores"]["predictor"] == chosen.dci_predictor
    assert {k: calls["factor_vae_details"][k] for k in chosen.factor_vae} == chosen.factor_vae
    factor_scores.disentanglement_metrics(StubVAE(), FactorImages(200), "val", protocol=protocol,
                                          dci_predictor="forest",
                                          factor_vae={"n_train_votes": 20, "n_eval_votes": 20, "batch_size": 8})
    assert calls["dci_scores"]["predictor"] == "forest" and calls["factor_vae_details"]["batch_size"] == 8
