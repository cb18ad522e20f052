"""Measure the figures docs/metrics.md reports: the cost of the representation metrics, the sample-quality numbers of
reference pairs and their cost, and what a perfectly axis-aligned code scores under each disentanglement protocol.

    python scripts/measure_metrics.py representation [--data-dir data]   # synthetic codes; PCA of MNIST if present
    python scripts/measure_metrics.py sample-quality [--data-dir data]   # digits; MNIST if present
    python scripts/measure_metrics.py protocols

Prints one JSON object per measurement. A thin command line over vaelab.metrics; nothing here is a metric.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - start, 2)


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


def mnist(data_dir: Path):
    """MNIST's train and test splits as vaelab loads them, or None when the files are not there."""
    if not (Path(data_dir) / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file():
        return None
    from vaelab.data import MNISTDataModule

    datamodule = MNISTDataModule(data_dir=data_dir, val_fraction=0.0, download=False, cache=False)
    datamodule.setup()
    return datamodule.splits


# ---------------------------------------------------------------------------------------------------------------


def representation(args) -> None:
    from vaelab.metrics.representation import clustering_agreement, knn_accuracy, linear_probe_accuracy

    def blobs(n, d, seed):
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, 10, n)
        centres = np.random.default_rng(0).standard_normal((10, d))
        return centres[labels] + 1.0 * rng.standard_normal((n, d)), labels

    def measure(what, z_train, y_train, z_test, y_test):
        probe, t_probe = timed(linear_probe_accuracy, z_train, y_train, z_test, y_test)
        knn, t_knn = timed(knn_accuracy, z_train, y_train, z_test, y_test)
        clusters, t_kmeans = timed(clustering_agreement, z_test, y_test)
        emit(what=what, train=list(z_train.shape), test=list(z_test.shape), linear_probe=round(probe, 4),
             knn=round(knn, 4), **{k: round(v, 4) for k, v in clusters.items()},
             seconds={"linear_probe": t_probe, "knn": t_knn, "kmeans": t_kmeans})

    measure("synthetic blobs, 10 classes", *blobs(10_000, 16, 1), *blobs(10_000, 16, 2))
    measure("synthetic blobs, 10 classes", *blobs(60_000, 50, 3), *blobs(10_000, 50, 4))
    splits = mnist(args.data_dir)
    if splits is not None:
        from sklearn.decomposition import PCA

        x_train = splits["train"][0].reshape(60_000, -1).numpy() / 255.0
        x_test = splits["test"][0].reshape(10_000, -1).numpy() / 255.0
        for d in (16, 50):
            pca = PCA(d, random_state=0).fit(x_train)
            measure(f"MNIST, PCA to {d} dims", pca.transform(x_train), splits["train"][1].numpy(),
                    pca.transform(x_test), splits["test"][1].numpy())


# ---------------------------------------------------------------------------------------------------------------


def sample_quality_figures(args) -> None:
    from vaelab.data import DigitsDataModule
    from vaelab.metrics.feature_net import accuracy, extract_features, load_feature_net
    from vaelab.metrics.sample_quality import frechet_distance, precision_recall

    def pairs(net, name, train, test, n):
        g = torch.Generator().manual_seed(0)
        side = train.shape[-1]
        pick = torch.randperm(len(train), generator=g)[:n]
        reference = test[:n]
        mean_image = (train.float().mean(0, keepdim=True) / 255.0).expand(len(reference), -1, -1, -1)
        halves = torch.randperm(len(train), generator=g)
        candidates = {
            "train vs test": train[pick],
            "noise (uniform) vs test": torch.rand(len(reference), 1, side, side, generator=g),
            "collapsed (the mean train image) vs test": mean_image,
            "binarised test vs test": torch.bernoulli(reference.float() / 255.0, generator=g),
        }
        features_ref, t_ref = timed(extract_features, net, reference)
        for what, images in candidates.items():
            features, t_feat = timed(extract_features, net, images)
            fcd, t_fcd = timed(frechet_distance, features, features_ref)
            pr, t_pr = timed(precision_recall, features_ref, features)
            emit(net=name, pair=what, n=[len(images), len(reference)], fcd=round(fcd, 3),
                 precision=round(pr["precision"], 4), recall=round(pr["recall"], 4),
                 seconds={"features": round(t_feat + t_ref, 2), "fcd": t_fcd, "precision_recall": t_pr})
        a, b = train[halves[:n]], train[halves[n : 2 * n]]
        if len(b) == n:
            fa, fb = extract_features(net, a), extract_features(net, b)
            pr = precision_recall(fb, fa)
            emit(net=name, pair="train half vs other train half (the floor)", n=[n, n],
                 fcd=round(frechet_distance(fa, fb), 3), **{k: round(v, 4) for k, v in pr.items()})

    digits = DigitsDataModule(data_dir="/tmp/vaelab-digits", cache=False)
    digits.setup()
    net = load_feature_net("digits")
    emit(net="digits", test_accuracy=accuracy(net, *digits.splits["test"]),
         val_accuracy=accuracy(net, *digits.splits["val"]))
    pairs(net, "digits", digits.splits["train"][0], digits.splits["test"][0], 360)
    splits = mnist(args.data_dir)
    if splits is not None:
        net = load_feature_net("mnist")
        emit(net="mnist", test_accuracy=accuracy(net, *splits["test"]))
        pairs(net, "mnist", splits["train"][0], splits["test"][0], 10_000)


# ---------------------------------------------------------------------------------------------------------------


def protocols(args) -> None:
    from vaelab.metrics.disentanglement import (
        PROTOCOLS,
        dci_scores,
        factor_vae_details,
        mutual_information_gap,
        sap_score,
    )
    from vaelab.metrics.factors import DEFAULT_FACTOR_VAE

    sizes = np.array([3, 4, 10, 16, 16])  # the small shapes setting: shape, scale, orientation, posX, posY

    def axis_code(f):
        return (f - (sizes - 1) / 2) / np.sqrt((sizes**2 - 1) / 12)

    for n in (2761, 10_000):  # the small setting's val split; disentanglement_lib's sample
        factors = np.random.default_rng(0).integers(0, sizes, size=(n, len(sizes)))
        codes = np.concatenate([axis_code(factors), np.zeros((n, 5))], axis=1)  # + 5 collapsed dims, as a VAE's
        for name, p in PROTOCOLS.items():
            mig, t_mig = timed(mutual_information_gap, codes, factors)
            sap, t_sap = timed(sap_score, codes, factors, test_fraction=p.test_fraction, classifier=p.sap_classifier)
            dci, t_dci = timed(dci_scores, codes, factors, test_fraction=p.test_fraction, predictor=p.dci_predictor)
            fvae, t_fvae = timed(factor_vae_details, lambda f: np.concatenate([axis_code(f), np.zeros((len(f), 5))], 1),
                                 sizes, np.random.default_rng(0), **{**DEFAULT_FACTOR_VAE, **p.factor_vae})
            emit(protocol=name, n=n, code="axis-aligned (standardised factor indices) + 5 constant dims",
                 mig=round(mig, 4), sap=round(sap, 4), factor_vae=round(fvae["score"], 4),
                 dci_disentanglement=round(dci["disentanglement"], 4), dci_completeness=round(dci["completeness"], 4),
                 dci_informativeness=round(dci["informativeness"], 4),
                 seconds={"mig": t_mig, "sap": t_sap, "dci": t_dci, "factor_vae (codes given)": t_fvae})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["representation", "sample-quality", "protocols"])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    args = parser.parse_args(argv)
    {"representation": representation, "sample-quality": sample_quality_figures, "protocols": protocols}[args.what](
        args
    )


if __name__ == "__main__":
    main()
