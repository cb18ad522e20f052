"""One table of every family, measured the same way with three seeds: what each latent is good for.

Every family (:data:`FAMILIES`) is trained with the same net (an MLP with one hidden layer of 512 units; VQ-VAE with
its own grid net, as its code needs one), the same budget (:data:`BUDGETS`) and the same data, then evaluated by
``src/eval.py`` on the test split with one protocol:

* binarised MNIST (dynamic binarisation, a 16-dimensional code): −ELBO and −L_K where the family has a likelihood
  bound, the reconstruction error (nats and per-pixel MSE), active units, the representation scores (linear probe,
  k-NN, k-means NMI) and the sample-quality scores (Fréchet classifier distance, precision, recall);
* shapes (a 10-dimensional code): the disentanglement scores (MIG, FactorVAE, SAP, DCI disentanglement) under the
  disentanglement_lib protocol.

Each (data, family, seed) runs in its own processes into ``<out>/<budget>/<data>/<family>/seed<seed>/{train,eval}``
(with ``times.json``), and one that finished before is not run again, so an interrupted table goes on where it
stopped: a training whose own record (its ``metrics.json``) says ``completed`` and whose checkpoint is there is
never trained again (:func:`finished`), one that was stopped goes on from its ``last.ckpt`` (:func:`train_stage`).
Each process runs in a process group of its own, and a SIGTERM, SIGINT or SIGHUP sent to the table is passed on
to every one of them (:class:`Runs`), which end as they would on their own (a training records ``terminated``)
before the table stops. :func:`render` reads the folders back into mean ± sd tables (and :func:`plot` into a
figure), written into README.md between ``<!-- families:start -->`` and ``<!-- families:end -->``.
``scripts/family_table.py`` is the command line.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaelab.record import COMPLETED, RECORD_FILE, STATUS
from vaelab.reports.processes import Runs, TableStopped, signals_passed_on
from vaelab.reports.results import command

START, END = "<!-- families:start -->", "<!-- families:end -->"
SEEDS = (1, 2, 3)


@dataclass(frozen=True)
class Family:
    """A row: the overrides that make the family, and how it is evaluated."""

    key: str
    train: tuple[str, ...]  # src/train.py overrides (a model= first)
    evaluate: tuple[str, ...] = ()  # extra src/eval.py overrides (e.g. sampler=gmm)
    own_net: bool = False  # keeps its preset's net (VQ-VAE's grid) instead of the common MLP
    reuse: str | None = None  # evaluates another row's checkpoints instead of training (an AE with a GMM sampler)
    prior_stage: tuple[str, ...] | None = None  # a second stage trained from the first's checkpoint (MNIST only)
    shapes: bool = True  # has a shapes row


FAMILIES: tuple[Family, ...] = (
    Family("ae", ("model=ae",)),
    Family("ae_gmm", ("model=ae",), ("sampler=gmm",), reuse="ae", shapes=False),
    Family("dae", ("model=dae",)),
    Family("sparse_ae", ("model=sparse_ae",)),
    Family("contractive_ae", ("model=contractive_ae",)),
    Family("vae", ("model=vae",)),
    Family("beta_vae", ("model=beta_vae",)),
    Family("beta_tcvae", ("model=beta_tcvae",)),
    Family("factor_vae", ("model=factor_vae",)),
    Family("iwae", ("model=iwae",)),
    Family("vamp_vae", ("model=vamp_vae",)),
    Family("iaf_vae", ("model=iaf_vae",)),
    # two latent layers: z_1 of the common code size, z_2 of 8
    Family("hvae", ("model=hvae", "model.code.latent_dims=[${model.latent_dim},8]")),
    Family("miwae", ("model=miwae",)),
    Family("ciwae", ("model=ciwae",)),
    Family("piwae", ("model=piwae",)),
    Family("wae", ("model=wae",)),
    Family("infovae", ("model=infovae",)),
    Family("dip_vae", ("model=dip_vae",)),
    Family("aae", ("model=aae",)),
    Family("rae", ("model=rae",), ("sampler=gmm",)),
    Family("cvae", ("model=cvae",)),
    # MNIST only: the common 16-dimensional code is 6 continuous dimensions and one 10-way category; the shapes'
    # 10 dimensions would leave no room beside a 10-way category. Its capacities rise over the small budget's steps.
    Family("joint_vae", ("model=joint_vae", "model.objective.capacity_cont_steps=4000",
                         "model.objective.capacity_disc_steps=4000"), shapes=False),
    # no shapes row: its code is a grid of 8 x 8 codebook vectors (1,024 numbers), not a few latent factors, and the
    # disentanglement_lib protocol's boosted trees for DCI did not finish on it in 14 minutes
    Family("vqvae", ("model=vqvae",), own_net=True, prior_stage=("model=vqvae_prior",), shapes=False),
    Family("vqvae2", ("model=vqvae2",), own_net=True, prior_stage=("model=vqvae2_prior",), shapes=False),
)


@dataclass(frozen=True)
class Budget:
    """How long each family trains and how hard it is evaluated."""

    mnist_epochs: int
    shapes_epochs: int
    prior_epochs: int
    iw_k: int
    eval_extra: tuple[str, ...] = ()
    note: str = ""


BUDGETS = {
    # the whole table in about 1 h 30 min on a 2-core CPU with --jobs 2 (the README says how it was measured)
    "small": Budget(mnist_epochs=10, shapes_epochs=10, prior_epochs=3, iw_k=100,
                    eval_extra=("sample_quality.n=5000", "representation.max_fit=20000"),
                    note="10 epochs (shapes 10), −L_100, 5,000 samples, probes fitted on 20,000 codes"),
    # for a GPU: the literature's evaluation
    "full": Budget(mnist_epochs=100, shapes_epochs=30, prior_epochs=20, iw_k=5000,
                   note="100 epochs (shapes 30), −L_5000, 10,000 samples, probes fitted on all 60,000 codes"),
}

DATA = {
    "mnist": ("data=mnist", "data.binarize=dynamic", "model.latent_dim=16"),
    "shapes": ("data=shapes", "model.latent_dim=10"),
}
COMMON_NET = ("model.net.encoder.hidden_dims=[512]", "model.net.decoder.hidden_dims=[512]")
QUIET = ("callbacks=minimal", "logger=none")


def data_overrides(data: str) -> tuple[str, ...]:
    return tuple(o for o in DATA[data] if not o.startswith("model."))


def train_overrides(family: Family, data: str, budget: Budget, seed: int) -> tuple[str, ...]:
    """The first stage's overrides: the family's, the data's, the common net and code size (a family with a net of
    its own keeps its preset's), the budget's epochs and the seed."""
    epochs = budget.mnist_epochs if data == "mnist" else budget.shapes_epochs
    model = () if family.own_net else (*(o for o in DATA[data] if o.startswith("model.")), *COMMON_NET)
    return (*family.train, *data_overrides(data), *model, f"trainer.max_epochs={epochs}", f"seed={seed}", *QUIET)


def eval_overrides(family: Family, data: str, budget: Budget) -> tuple[str, ...]:
    if data == "shapes":  # the disentanglement scores only
        return ("iw_k=0", "representation=null", "sample_quality=null", *family.evaluate)
    return (f"iw_k={budget.iw_k}", *budget.eval_extra, *family.evaluate)


# ------------------------------------------------------------------------------------------ the runs' processes
RUNS = Runs()


def run(cmd: list[str], cwd: Path) -> float:
    """Run one training or evaluation process (:meth:`Runs.run`); the wall time in seconds."""
    return RUNS.run(cmd, cwd)


# --------------------------------------------------------------------------------------------------- one seed
def _record(run_dir: Path) -> dict[str, Any]:
    """A run's own record (its ``metrics.json``), ``{}`` when it has none or an unreadable one."""
    try:
        return json.loads((run_dir / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _done(folder: Path) -> bool:
    return _record(folder / "eval").get(STATUS) == COMPLETED


def _checkpoint_file(record: dict[str, Any]) -> str | None:
    """The checkpoint a run's record names to evaluate (the tested one, else the last) when the file is there."""
    for key in ("test_ckpt", "last_ckpt"):
        ckpt = record.get(key)
        if isinstance(ckpt, str) and ckpt and Path(ckpt).is_file():
            return ckpt
    return None


def _checkpoint(train_dir: Path) -> str:
    record = _record(train_dir)
    return _checkpoint_file(record) or record["last_ckpt"]


def finished(run_dir: Path) -> bool:
    """Whether the training in ``run_dir`` finished: its own record says ``completed`` and the checkpoint it names
    is there. A finished training is never run again (a second one into its folder would mix its checkpoints,
    ``…-v1.ckpt``, with the first's)."""
    record = _record(run_dir)
    return record.get(STATUS) == COMPLETED and _checkpoint_file(record) is not None


def _set_aside(run_dir: Path) -> None:
    """Rename an unfinished run's folder that has no ``last.ckpt`` to go on from to ``<name>.unfinished<n>``, so
    that a fresh training starts in an empty folder and nothing of the old one is lost."""
    if not run_dir.exists():
        return
    n = 1
    while run_dir.with_name(f"{run_dir.name}.unfinished{n}").exists():
        n += 1
    aside = run_dir.with_name(f"{run_dir.name}.unfinished{n}")
    run_dir.rename(aside)
    print(f"= {run_dir} did not finish and has no last.ckpt to go on from: moved to {aside}", flush=True)


def train_stage(overrides: tuple[str, ...], run_dir: Path, extra: list[str], root: Path, times: dict[str, float],
                key: str) -> None:
    """Train into ``run_dir`` unless that training :func:`finished` before (then it is not run again, and its
    time stays the one recorded). One that was stopped goes on from its ``checkpoints/last.ckpt`` in the same
    folder; one without it starts afresh in an empty folder (:func:`_set_aside`). The wall time goes to
    ``times[key]``."""
    if finished(run_dir):
        print(f"= {run_dir} finished before: not trained again", flush=True)
        times.setdefault(key, float(_record(run_dir).get("seconds") or 0.0))
        return
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        print(f"= {run_dir} did not finish: it goes on from {last}", flush=True)
        extra = [*extra, f"ckpt_path={last}"]
    else:
        _set_aside(run_dir)
    times[key] = run(command("src/train.py", overrides, run_dir, extra), root)


def _save_times(folder: Path, times: dict[str, float]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "times.json").write_text(json.dumps(times, indent=2) + "\n")


def run_one(family: Family, data: str, budget: Budget, seed: int, out: Path, root: Path,
            data_dir: str | None, train_extra: tuple[str, ...] = ()) -> None:
    """Train (and for VQ-VAE on MNIST, train its prior) and evaluate one seed of one family into its folder;
    ``train_extra`` goes to every training command (e.g. ``trainer=gpu``). A seed evaluated before is left as it
    is, a training that finished before is not run again (:func:`train_stage`); ``times.json`` is written after
    each stage."""
    folder = out / data / family.key / f"seed{seed}"
    if _done(folder):
        return
    extra = [*([f"data.data_dir={data_dir}"] if data_dir else []), *train_extra]
    times: dict[str, float] = _read(folder / "times.json")
    if family.reuse:
        train_dir = out / data / family.reuse / f"seed{seed}" / "train"
    else:
        train_dir = folder / "train"
        train_stage(train_overrides(family, data, budget, seed), train_dir, extra, root, times, "train_seconds")
        _save_times(folder, times)
        if family.prior_stage and data == "mnist":
            stage1 = _checkpoint(train_dir)
            train_dir = folder / "prior"
            overrides = (*family.prior_stage, *data_overrides(data), f"model.init_from={stage1}",
                         f"trainer.max_epochs={budget.prior_epochs}", f"seed={seed}", *QUIET)
            train_stage(overrides, train_dir, extra, root, times, "prior_seconds")
            _save_times(folder, times)
    eval_extra = [f"+data.data_dir={data_dir}"] if data_dir else []
    overrides = (f"ckpt_path={_checkpoint(train_dir)}", *eval_overrides(family, data, budget))
    times["eval_seconds"] = run(command("src/eval.py", overrides, folder / "eval", eval_extra), root)
    _save_times(folder, times)


def table_jobs(families: Iterable[str], datasets: Iterable[str], seeds: Iterable[int]) -> list[tuple[Family, str, int]]:
    """Every (family, data, seed) of the table, a seed at a time (every row has its first seed before any has its
    second), a reused row after the row it reuses."""
    chosen = [f for f in FAMILIES if f.key in set(families)]
    ordered = sorted(chosen, key=lambda f: f.reuse is not None)
    return [(family, data, seed) for seed in seeds for data in datasets for family in ordered
            if data == "mnist" or family.shapes]


def run_table(budget_name: str, out: Path, root: Path, data_dir: str | None, families: Iterable[str],
              datasets: Iterable[str], seeds: Iterable[int] = SEEDS, train_extra: tuple[str, ...] = (),
              jobs: int = 1) -> None:
    """Every (data, family, seed) not yet done, ``jobs`` at a time in the order of :func:`table_jobs` (a reused
    row waits for the run it reuses). The first failure stops the runs not yet started and is raised. A SIGTERM,
    SIGINT or SIGHUP is passed on to the runs going (:func:`signals_passed_on`); once they have ended the table
    stops with :class:`TableStopped` (exit code 128 + the signal's number)."""
    if jobs < 1:
        raise ValueError(f"jobs={jobs}: run at least one job at a time")
    budget = BUDGETS[budget_name]
    todo = table_jobs(families, datasets, list(seeds))
    started: dict[tuple[str, str, int], Future] = {}

    def one(family: Family, data: str, seed: int) -> None:
        if family.reuse and (family.reuse, data, seed) in started:
            started[(family.reuse, data, seed)].result()  # submitted earlier, so running or done: no deadlock
        run_one(family, data, budget, seed, out / budget_name, root, data_dir, train_extra)

    try:
        with signals_passed_on(RUNS), ThreadPoolExecutor(max_workers=jobs) as pool:
            for family, data, seed in todo:
                started[(family.key, data, seed)] = pool.submit(one, family, data, seed)
            for future in started.values():
                try:
                    future.result()
                except BaseException:
                    for pending in started.values():
                        pending.cancel()
                    raise
    except TableStopped:  # (the pool's exit has waited for the runs that were passed the signal)
        print("The table stopped: every run it had started has ended (each says how in its metrics.json). Run the "
              "same command again to go on where it stopped.", file=sys.stderr, flush=True)
        raise


# ----------------------------------------------------------------------------------------------------- the tables
@dataclass
class Column:
    """A table column: its heading, its name in the per-seed CSV (``key``), how to read it from one seed's records,
    digits, and whether higher is better."""

    heading: str
    key: str
    read: Any
    digits: int = 2
    higher: bool | None = None
    values: list[float] = field(default_factory=list)


def _test(record: dict[str, Any], name: str) -> float | None:
    value = record.get("test", {}).get(f"test/{name}")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _metric(heading: str, name: str, digits: int, higher: bool | None) -> Column:
    """A column of one test metric of eval.py's record (``test/<name>``)."""
    return Column(heading, name, lambda e, t: _test(e, name), digits, higher)


def mnist_columns() -> list[Column]:
    return [
        _metric("−ELBO", "neg_elbo", 2, False),
        _metric("−L_K", "neg_iw_bound", 2, False),
        _metric("recon", "recon", 2, False),
        _metric("MSE", "mse", 4, False),
        _metric("active units", "active_units", 1, None),
        _metric("linear probe", "linear_probe", 3, True),
        _metric("k-NN", "knn", 3, True),
        _metric("NMI", "nmi", 3, True),
        _metric("FCD", "fcd", 1, False),
        _metric("precision", "precision", 3, True),
        _metric("recall", "recall", 3, True),
        # a conditional model's samples: the share the classifier puts in the class asked for (model=cvae)
        _metric("cond. accuracy", "conditional_accuracy", 3, True),
        Column("train min", "train_minutes",
               lambda e, t: (t.get("train_seconds", 0) + t.get("prior_seconds", 0)) / 60 or None, 1),
    ]


def shapes_columns() -> list[Column]:
    return [
        _metric("−ELBO", "neg_elbo", 2, False),
        _metric("MIG", "mig", 3, True),
        _metric("FactorVAE", "factor_vae", 3, True),
        _metric("SAP", "sap", 3, True),
        _metric("DCI-D", "dci_disentanglement", 3, True),
        Column("train min", "train_minutes", lambda e, t: t.get("train_seconds", 0) / 60 or None, 1),
    ]


def columns_of(data: str) -> list[Column]:
    return mnist_columns() if data == "mnist" else shapes_columns()


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def seed_rows(data: str, out: Path) -> list[dict[str, Any]]:
    """One row per finished (family, seed) of ``data`` under ``out`` (a budget's folder): ``family``, ``seed`` and
    every column's value (None where the family has none), in the order of :data:`FAMILIES` and of the seeds."""
    rows = []
    for family in FAMILIES:
        for folder in sorted(p for p in (out / data / family.key).glob("seed*") if _done(p)):
            row: dict[str, Any] = {"family": family.key, "seed": int(folder.name.removeprefix("seed"))}
            for column in columns_of(data):
                row[column.key] = column.read(_read(folder / "eval" / RECORD_FILE), _read(folder / "times.json"))
            rows.append(row)
    return rows


def write_csv(rows: list[dict[str, Any]], data: str, path: Path) -> None:
    """The per-seed numbers behind a table as CSV: ``family``, ``seed`` and a column per metric (full precision;
    empty where a family has no value), the rows of :data:`FAMILIES`' order."""
    order = {f.key: i for i, f in enumerate(FAMILIES)}
    rows = sorted(rows, key=lambda r: (order.get(r["family"], len(order)), int(r["seed"])))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["family", "seed", *(c.key for c in columns_of(data))], lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else repr(float(v)) if k not in ("family", "seed") else v)
                             for k, v in row.items()})


def read_csv(path: Path) -> list[dict[str, Any]]:
    """The rows :func:`write_csv` wrote (values as floats, None where empty); no rows when there is no file."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [{k: (v if k == "family" else int(v) if k == "seed" else float(v) if v != "" else None)
                 for k, v in row.items()} for row in csv.DictReader(handle)]


def merge_rows(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``old`` with every (family, seed) that ``new`` has replaced by ``new``'s row: a table run on some families
    keeps the committed numbers of the others."""
    fresh = {(r["family"], r["seed"]) for r in new}
    return [r for r in old if (r["family"], r["seed"]) not in fresh] + list(new)


def family_cells(rows: list[dict[str, Any]], columns: list[Column]) -> dict[str, str]:
    """The mean ± sd of every column over one family's seed ``rows``."""
    cells = {}
    for column in columns:
        column.values = [r[column.key] for r in rows if r.get(column.key) is not None]
        cells[column.heading] = mean_sd(column.values, column.digits)
    return cells


def mean_sd(values: list[float], digits: int) -> str:
    """``m ± s`` (the sample standard deviation over seeds), ``m`` for one value, ``–`` for none."""
    if not values:
        return "–"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def render_data(data: str, rows: list[dict[str, Any]]) -> str:
    """The markdown table of one data set's families from its per-seed ``rows``."""
    columns = columns_of(data)
    headings = ["family", "seeds", *(c.heading for c in columns)]
    lines = ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
    for family in FAMILIES:
        mine = [r for r in rows if r["family"] == family.key]
        if not mine or (data == "shapes" and not family.shapes):
            continue
        cells = family_cells(mine, columns)
        lines.append("| " + " | ".join([family.key, str(len(mine)), *(cells[c.heading] for c in columns)]) + " |")
    return "\n".join(lines)


def render(budget_name: str, rows: dict[str, list[dict[str, Any]]]) -> str:
    """Both tables from the per-seed rows of each data set (:func:`seed_rows`, or :func:`read_csv` of the committed
    CSVs), with what they were measured under."""
    return "\n".join([
        f"Budget `{budget_name}`: {BUDGETS[budget_name].note}; mean ± sd over the seeds.", "",
        "**Binarised MNIST** (test split, 10,000 images):", "", render_data("mnist", rows.get("mnist", [])), "",
        "**Shapes** (test split; disentanglement_lib protocol):", "", render_data("shapes", rows.get("shapes", [])),
    ])


def plot(rows: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Four panels (−L_K, linear probe, FCD, MIG): each family's mean with its seed spread (± sd)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("mnist", "−L_K (nats, lower is better)", "neg_iw_bound"),
              ("mnist", "linear probe accuracy", "linear_probe"),
              ("mnist", "FCD (lower is better)", "fcd"), ("shapes", "MIG", "mig")]
    figure, axes = plt.subplots(1, 4, figsize=(14, 3.6), constrained_layout=True)
    for axis, (data, title, name) in zip(axes, panels, strict=True):
        labels, means, sds = [], [], []
        for family in FAMILIES:
            values = [r[name] for r in rows.get(data, []) if r["family"] == family.key and r.get(name) is not None]
            if values:
                labels.append(family.key)
                means.append(statistics.fmean(values))
                sds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
        axis.errorbar(means, range(len(labels)), xerr=sds, fmt="o", capsize=3)
        axis.set_yticks(range(len(labels)), labels)
        axis.invert_yaxis()
        axis.set_title(title, fontsize=10)
        axis.grid(axis="x", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
