"""TensorBoard's view of finished runs: an HParams entry for every run, with its final metrics, and the test results
as a table (a text card) instead of one-point charts."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import compose_train
from lightning import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata

from vaelab.loggers.tensorboard import trial_name
from vaelab.tasks.train import train


def events(run_dir):
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def session(acc):
    """(the hyperparameters of the run's HParams session start, its end status)."""
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    hparams = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    return hparams, api_pb2.Status.Name(end.status)


def final(acc, prefix="hparams/"):
    return {t.removeprefix(prefix): acc.Scalars(t)[-1].value for t in acc.Tags()["scalars"] if t.startswith(prefix)}


def text(acc, tag):
    return acc.Tensors(f"{tag}/text_summary")[-1].tensor_proto.string_val[0].decode()


def session_groups(logdir):
    """What TensorBoard's HParams tab lists for ``logdir``, through TensorBoard's own backend: {run: (hparams,
    metrics)}, sorted by the test loss as a click on that column would."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context, list_session_groups

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    tb = base_plugin.TBContext(logdir=str(logdir), multiplexer=mux,
                               data_provider=data_provider.MultiplexerDataProvider(mux, str(logdir)))
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0, slice_size=10, include_metrics=True, aggregation_type=api_pb2.AGGREGATION_AVG,
        allowed_statuses=[api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING,
                          api_pb2.STATUS_UNKNOWN],
        col_params=[api_pb2.ColParams(metric=api_pb2.MetricName(tag="hparams/test_loss"), order=api_pb2.ORDER_ASC)],
    )
    response = list_session_groups.Handler(context.RequestContext(), backend_context.Context(tb), "", request).run()
    return {
        group.sessions[0].name: ({k: getattr(v, v.WhichOneof("kind")) for k, v in group.hparams.items()},
                                 {m.name.tag: m.value for m in group.metric_values})
        for group in response.session_groups
    }


def test_every_run_has_an_hparams_entry_with_its_final_metrics(tmp_path):
    train(compose_train(tmp_path / "vae", ["callbacks=minimal", "model.beta=2", "data.batch_size=16"]))
    train(compose_train(tmp_path / "ae", ["model=ae", "callbacks=minimal", "logger=many"]))
    records = {m: json.loads((tmp_path / m / "run" / "metrics.json").read_text()) for m in ("vae", "ae")}

    vae = events(tmp_path / "vae" / "run")  # the run folder itself: its TensorBoard name is the folder's
    hparams, status = session(vae)
    assert status == "STATUS_SUCCESS"
    assert {k: hparams[k] for k in ("model", "model/objective", "model/net", "model/beta_schedule", "data")} == {
        "model": "vae", "model/objective": "elbo", "model/net": "mlp", "model/beta_schedule": "constant",
        "data": "digits"}
    assert (hparams["model.beta"], hparams["model.latent_dim"], hparams["data.batch_size"]) == (2, 16, 16)
    assert (hparams["model.optimizer.lr"], hparams["seed"], hparams["data.binarize"]) == (0.001, 12345, "none")
    record, test = records["vae"], records["vae"]["test"]
    assert final(vae) == pytest.approx({
        "best_val_neg_elbo": -record["best"]["score"], "test_neg_elbo": -test["test/elbo"],
        "test_recon": test["test/recon"], "test_kl": test["test/kl"], "test_loss": test["test/loss"],
        "test_active_units": test["test/active_units"]})  # no test_beta: β is a setting, not a result
    assert not [t for t in vae.Tags()["scalars"] if t.startswith("test/")]  # a table, not one-point charts
    results = text(vae, "run/results")
    assert results.startswith("**completed** after 1 epochs (3 steps).")
    assert f"| −ELBO | {-record['best']['score']:.4f} | {-test['test/elbo']:.4f} |" in results
    assert "latent_dim: 16" in text(vae, "run/config")

    # the Trial ID: the run's path under paths.log_dir, its TensorBoard name there; the absolute path outside it
    start = metadata.parse_session_start_info_plugin_data(
        vae.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG])
    assert start.group_name == str(tmp_path / "vae" / "run")  # (compose_train puts the run outside paths.log_dir)
    assert trial_name(tmp_path / "logs" / "train" / "runs" / "vae_z16_b1_x", tmp_path / "logs") == \
        "train/runs/vae_z16_b1_x"

    ae = events(tmp_path / "ae" / "run")
    hparams, status = session(ae)
    assert status == "STATUS_SUCCESS" and hparams["model"] == "ae" and "model.beta" not in hparams
    assert final(ae) == pytest.approx({"best_val_loss": records["ae"]["best"]["score"],
                                       "test_loss": records["ae"]["test"]["test/loss"],
                                       "test_recon": records["ae"]["test"]["test/recon"]})
    # logger=many: the CSV logger still has every test metric
    with (tmp_path / "ae" / "run" / "csv" / "metrics.csv").open() as f:
        assert any(row.get("test/loss") for row in csv.DictReader(f))

    # TensorBoard's HParams tab lists both runs, each with its own hyperparameters and metrics
    groups = session_groups(tmp_path)
    assert list(groups) == ["ae/run", "vae/run"] or list(groups) == ["vae/run", "ae/run"]
    ordered = sorted(groups, key=lambda run: groups[run][1]["hparams/test_loss"])
    assert list(groups) == ordered
    assert groups["vae/run"][0]["model.beta"] == 2 and groups["ae/run"][0]["model"] == "ae"
    assert groups["vae/run"][1]["hparams/test_neg_elbo"] == pytest.approx(-test["test/elbo"])


class FailInFirstEpoch(Callback):
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        raise RuntimeError("boom")


def test_a_failed_run_ends_its_hparams_session_as_a_failure(tmp_path):
    cfg = compose_train(tmp_path, ["callbacks=minimal", "trainer.max_epochs=2",
                                   "+callbacks.boom._target_=test_summary.FailInFirstEpoch"])
    with pytest.raises(RuntimeError, match="boom"):
        train(cfg)
    acc = events(tmp_path / "run")
    assert session(acc)[1] == "STATUS_FAILURE"
    assert text(acc, "run/results").startswith("**failed**")
    assert "best_val_neg_elbo" in final(acc) and "test_neg_elbo" not in final(acc)
