"""Tracking: the light package, the tracker a config asks for, the shared interface, and a
real MLflow store in a temporary folder (offline, a few seconds)."""

import inspect
import json
import logging
import subprocess
import sys

import pytest
from conftest import ROOT, flaky

from speechrnn.config import Config, TrackingConfig
from speechrnn.tracking import (
    DEFAULT_URI,
    NullTracker,
    RunTracker,
    experiment_name,
    make_tracker,
    tracking_uri,
)

INTERFACE = [name for name, value in vars(RunTracker).items()
             if inspect.isfunction(value) and not name.startswith("_")]


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh SQLite MLflow store; no outer `mlflow run` run; no run left active."""
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    yield f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    import mlflow

    while mlflow.active_run():
        mlflow.end_run()


def config(name="tiny", **tracking) -> Config:
    return Config(tracking=TrackingConfig(**tracking), name=name)


def test_importing_tracking_imports_neither_mlflow_nor_tensorflow():
    code = ("import sys, speechrnn.tracking, speechrnn.report\n"
            "from speechrnn.tracking import NullTracker, make_tracker, experiment_name\n"
            "heavy = [m for m in ('mlflow', 'tensorflow', 'keras', 'matplotlib') "
            "if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_mlflow_names_load_on_first_use():
    import speechrnn.tracking as tracking
    from speechrnn.tracking import (  # noqa: F401  (each resolves)
        SIGNATURE,
        Tracker,
        download_model,
        load_pyfunc,
        log_to_run,
        pinned_requirements,
        scoring_app,
        served_model_uri,
        ui_command,
    )

    assert issubclass(Tracker, RunTracker)
    assert Tracker.__module__ == "speechrnn.tracking.runs"
    assert ui_command.__module__ == scoring_app.__module__ == "speechrnn.tracking.servers"
    assert download_model.__module__ == "speechrnn.tracking.registry"
    assert [c.name for c in SIGNATURE.inputs.inputs] == ["audio"]
    assert any(r.startswith("mlflow==") for r in pinned_requirements())
    with pytest.raises(AttributeError):
        tracking.plot_history  # noqa: B018  (plotting lives in speechrnn.report)
    with pytest.raises(ImportError):
        from speechrnn.tracking import no_such_name  # noqa: F401


def test_uri_and_experiment_name(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri() == DEFAULT_URI == "sqlite:///mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert tracking_uri() == "sqlite:///elsewhere.db"
    assert tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert experiment_name(config("fsdd")) == "speechrnn-fsdd"
    assert experiment_name(config("fsdd", experiment="mine")) == "mine"


def test_make_tracker_is_a_null_tracker_when_tracking_is_off(store, tmp_path):
    for tracker in (make_tracker(config(enabled=False, uri=store)),
                    make_tracker(config(uri=store), enabled=False)):
        assert type(tracker) is NullTracker
    assert not (tmp_path / "mlruns").exists()  # no store opened, none created


def test_make_tracker_is_an_mlflow_tracker_on_the_configs_store(store, tmp_path):
    from speechrnn.tracking import Tracker

    for cfg in (config("tiny", uri=store), config("tiny", uri=store, experiment="mine")):
        tracker = make_tracker(cfg)
        assert isinstance(tracker, Tracker) and isinstance(tracker, RunTracker)
        assert tracker.experiment == experiment_name(cfg)
        assert tracker.uri == store and tracker.experiment_id and tracker.run_id is None
    assert (tmp_path / "mlruns" / "mlflow.db").exists()
    # the same experiment again: found, not created twice
    assert make_tracker(config("tiny", uri=store)).experiment_id == \
        make_tracker(config("tiny", uri=store)).experiment_id


def test_null_tracker_does_the_whole_interface_and_nothing_else(tmp_path):
    tracker = NullTracker()
    assert isinstance(tracker, RunTracker)
    assert set(INTERFACE) == {"start", "log_params", "log_metrics", "logged_steps",
                              "log_history", "set_tags", "log_dataset", "log_artifact",
                              "delete_artifacts", "log_text", "log_figure", "log_model",
                              "end"}
    assert tracker.uri == tracker.experiment == tracker.experiment_id == ""
    assert tracker.run_id is None and tracker.run_url == "tracking off"
    assert tracker.start() == "" and tracker.start("abc", "name") == "abc"
    assert tracker.start(run_name="name") == ""
    assert tracker.log_params({"a": 1, "b": [1, 2], "c": None}) is None
    assert tracker.log_metrics({"loss": 1.0}, step=3) is None
    assert tracker.logged_steps("loss") == set()
    assert tracker.log_history([{"epoch": 0, "loss": 1.0}]) is None
    assert tracker.set_tags({"k": 1}) is None
    assert tracker.log_dataset("train", tmp_path / "train.jsonl", [], "train") is None
    assert tracker.log_artifact(tmp_path, "folder") is None
    assert tracker.log_artifact(tmp_path / "missing.txt") is None
    assert tracker.delete_artifacts("folder") is None
    assert tracker.log_text("text", "notes.txt") is None
    assert tracker.log_figure(object(), "figure.png") is None
    assert tracker.log_model(tmp_path) == {} == tracker.log_model(tmp_path, "name")
    assert tracker.end() is None and tracker.end("FAILED") is None
    assert list(tmp_path.iterdir()) == []  # wrote nothing


def test_tracker_implements_every_method_with_the_interfaces_signature():
    from speechrnn.tracking import Tracker

    for name in INTERFACE:
        assert name in vars(Tracker), f"Tracker does not implement {name}"
        ours, theirs = inspect.signature(getattr(Tracker, name)), \
            inspect.signature(getattr(RunTracker, name))
        assert list(ours.parameters) == list(theirs.parameters), name
        assert [p.default for p in ours.parameters.values()] == \
            [p.default for p in theirs.parameters.values()], name


def test_tracker_logs_to_a_real_store_and_reads_its_steps_back(store, tmp_path):
    import mlflow

    from speechrnn.tracking import log_to_run

    tracker = make_tracker(config("tiny", uri=store))
    run_id = tracker.start(run_name="first")
    assert run_id == tracker.run_id and run_id in tracker.run_url
    params = {f"p{i:03d}": i for i in range(150)}  # more than one MLflow batch
    tracker.log_params({**params, "layers": [1, 2], "opts": {"a": 1}, "none": None})
    for step in (0, 1, 2):
        tracker.log_metrics({"dev_wer": 0.5 / (step + 1), "loss": step}, step=step)
    tracker.set_tags({"epochs": 3})
    (tmp_path / "notes.txt").write_text("hello")
    tracker.log_artifact(tmp_path / "notes.txt", "extra")
    tracker.log_text("a report", "report.txt")
    assert tracker.logged_steps("dev_wer") == {0, 1, 2}
    assert tracker.logged_steps("never_logged") == set()
    tracker.end()

    client = mlflow.MlflowClient(store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "first"
    assert run.info.experiment_id == tracker.experiment_id
    assert run.data.params["p149"] == "149" and len(run.data.params) == 153
    assert json.loads(run.data.params["layers"]) == [1, 2]
    assert json.loads(run.data.params["opts"]) == {"a": 1} and run.data.params["none"] == ""
    assert run.data.metrics["dev_wer"] == pytest.approx(0.5 / 3)
    assert run.data.tags["epochs"] == "3"
    assert {a.path for a in client.list_artifacts(run_id)} == {"extra", "report.txt"}

    # resumed (after an interrupt): the same run, its steps still there
    again = make_tracker(config("tiny", uri=store))
    assert again.start(run_id) == run_id
    again.log_metrics({"dev_wer": 0.1}, step=3)
    assert again.logged_steps("dev_wer") == {0, 1, 2, 3}
    again.end("KILLED")
    assert client.get_run(run_id).info.status == "KILLED"

    # an evaluation added to the finished run; an unknown run is refused
    log_to_run(run_id, {"test_wer": 0.25}, [tmp_path / "notes.txt"], "eval", uri=store)
    run = client.get_run(run_id)
    assert run.data.metrics["test_wer"] == 0.25
    assert [a.path for a in client.list_artifacts(run_id, "eval")] == ["eval/notes.txt"]
    with pytest.raises(ValueError, match="not found"):
        log_to_run("0" * 32, {"test_wer": 0.1}, [], "eval", uri=store)


def test_delete_artifacts_makes_room_for_a_replacement(store, tmp_path, monkeypatch, caplog):
    """What is logged under a path after delete_artifacts replaces what was there; a store
    that cannot delete costs one warning, not the run; one that is down keeps the call,
    in order."""
    import logging

    import mlflow
    import requests
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED
    from mlflow.store.artifact import artifact_repository_registry as registry

    from speechrnn.tracking import Tracker, runs

    def folder(name, *files):
        (tmp_path / name).mkdir()
        for f in files:
            (tmp_path / name / f).write_text(f)
        return tmp_path / name

    tracker = make_tracker(config("tiny", uri=store))
    run_id = tracker.start()
    client = mlflow.MlflowClient(store)

    def listed():
        return sorted(a.path for a in client.list_artifacts(run_id, "errors/worst"))

    tracker.log_artifact(folder("one", "01_a.wav", "02_b.wav"), "errors/worst")
    tracker.log_text("kept", "other.txt")
    tracker.delete_artifacts("errors")
    tracker.log_artifact(folder("two", "01_c.wav"), "errors/worst")
    assert listed() == ["errors/worst/01_c.wav"]
    assert {a.path for a in client.list_artifacts(run_id)} == {"errors", "other.txt"}
    tracker.delete_artifacts("not/there")  # nothing to delete: nothing happens

    # a store that cannot delete: one warning, the call after it still logged
    def refusing(*args, **kwargs):
        raise mlflow.exceptions.MlflowException("DELETE not allowed",
                                                error_code=PERMISSION_DENIED)

    def http_refusing(*args, **kwargs):  # an MLflow server: HTTPError, an OSError
        response = requests.Response()
        response.status_code = 405
        raise requests.HTTPError("405 Method Not Allowed", response=response)

    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING, runs.__name__):
        patch.setattr(registry, "get_artifact_repository", refusing)
        tracker.delete_artifacts("errors")
        patch.setattr(registry, "get_artifact_repository", http_refusing)
        tracker.delete_artifacts("errors")
        tracker.log_artifact(folder("three", "01_d.wav"), "errors/worst")
    assert caplog.text.count("cannot delete artifacts") == 1 and "fails" not in caplog.text
    assert listed() == ["errors/worst/01_c.wav", "errors/worst/01_d.wav"]

    # a store that is down: the deletion is kept and done before the calls after it
    monkeypatch.setattr(Tracker, "backoff", ())
    monkeypatch.setattr(Tracker, "retry_every", 0.0)
    real, failures = registry.get_artifact_repository, [1]

    def down(*args, **kwargs):
        if failures:
            failures.pop()
            raise mlflow.exceptions.MlflowException("database is locked",
                                                    error_code="TEMPORARILY_UNAVAILABLE")
        return real(*args, **kwargs)

    monkeypatch.setattr(registry, "get_artifact_repository", down)
    tracker.delete_artifacts("errors")  # kept
    assert listed() == ["errors/worst/01_c.wav", "errors/worst/01_d.wav"]
    tracker.log_artifact(folder("four", "01_e.wav"), "errors/worst")
    assert listed() == ["errors/worst/01_e.wav"]
    tracker.end()


def test_ui_command_and_served_model_uri(tmp_path):
    from speechrnn.tracking import served_model_uri, ui_command

    cmd, env = ui_command("127.0.0.1", 5000, uri="sqlite:///x/mlflow.db")
    assert cmd[:4] == [sys.executable, "-m", "mlflow", "ui"]
    assert cmd[cmd.index("--backend-store-uri") + 1] == "sqlite:///x/mlflow.db"
    assert env["MLFLOW_TRACKING_URI"] == "sqlite:///x/mlflow.db"
    assert env["MLFLOW_DISABLE_TELEMETRY"]  # speechrnn/__init__.py's default, passed on

    assert served_model_uri("runs:/abc/model") == "runs:/abc/model"
    (tmp_path / "trained").mkdir()
    (tmp_path / "trained" / "mlflow.json").write_text(json.dumps({"model_uri": "runs:/r/model"}))
    assert served_model_uri(str(tmp_path / "trained")) == "runs:/r/model"
    (tmp_path / "logged").mkdir()
    (tmp_path / "logged" / "MLmodel").write_text("flavors: {}\n")
    assert served_model_uri(str(tmp_path / "logged")) == str((tmp_path / "logged").resolve())
    with pytest.raises(FileNotFoundError, match="not an MLflow model"):
        served_model_uri(str(tmp_path))


def test_plot_history_draws_three_panels():
    from speechrnn.report import plot_history

    history = [{"epoch": e, "train_loss": 10 - e, "dev_loss": 11 - e, "dev_wer": 0.9 - e / 10,
                "dev_cer": 0.5 - e / 20, "learning_rate": 1e-3} for e in range(3)]
    figure = plot_history(history)
    try:
        assert len(figure.axes) == 3
        assert [ax.get_ylabel() for ax in figure.axes] == ["CTC loss", "%", ""]
        assert [len(ax.get_lines()) for ax in figure.axes] == [2, 2, 1]
        assert list(figure.axes[1].get_lines()[0].get_ydata()) == pytest.approx([90, 80, 70])
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)


def test_tracker_joins_an_experiment_another_process_just_created(tmp_path, monkeypatch):
    """Two workers (or two runs) starting at once: the one that loses the race to create
    the experiment logs into it instead of failing."""
    import mlflow

    from speechrnn.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = Tracker("speechrnn-race", uri)
    real, calls = mlflow.get_experiment_by_name, []

    def stale(name):  # looked up just before the other process created it
        calls.append(name)
        return None if len(calls) == 1 else real(name)

    monkeypatch.setattr(mlflow, "get_experiment_by_name", stale)
    second = Tracker("speechrnn-race", uri)
    assert second.experiment_id == first.experiment_id and len(calls) == 2


@pytest.fixture
def impatient(monkeypatch):
    """A tracker that retries at once (the defaults wait seconds)."""
    from speechrnn.tracking import Tracker

    monkeypatch.setattr(Tracker, "backoff", (0.01, 0.01))
    monkeypatch.setattr(Tracker, "retry_every", 0.0)
    return Tracker


def test_a_failing_store_loses_nothing_and_warns_once(store, impatient, monkeypatch, caplog):
    """The store cannot be reached when the tracker is made, nor when the run starts, and
    fails again for a while later: every call ends up logged once, with one warning."""
    import mlflow

    opened = flaky(monkeypatch, mlflow, "get_experiment_by_name", 4)
    started = flaky(monkeypatch, mlflow, "start_run", 2)
    logged = flaky(monkeypatch, mlflow, "log_metrics", 5)
    with caplog.at_level(logging.INFO, logger="speechrnn.tracking.runs"):
        tracker = impatient("speechrnn-flaky", store)
        assert tracker.experiment_id == ""  # not reached yet: the calls are kept
        assert tracker.start(run_name="flaky") == ""
        tracker.log_params({"lr": 0.1})
        for step in range(3):
            tracker.log_metrics({"dev_wer": 1.0 / (step + 1)}, step=step)
        tracker.log_history([{"epoch": s, "dev_wer": 1.0 / (s + 1)} for s in range(3)])
        tracker.end()
    assert opened.count(True) and started.count(True) == 1 and logged.count(True) == 3
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "database is locked" in warnings[0].getMessage()
    assert "answers again" in caplog.text
    client = mlflow.MlflowClient(store)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.params["lr"] == "0.1"
    assert [m.step for m in client.get_metric_history(tracker.run_id, "dev_wer")] == [0, 1, 2]


def test_a_store_that_never_answers_costs_a_warning_not_the_run(store, impatient,
                                                                monkeypatch, caplog):
    import mlflow

    flaky(monkeypatch, mlflow, "log_metrics", 10**6)
    tracker = impatient("speechrnn-down", store)
    tracker.start()
    with caplog.at_level(logging.WARNING, logger="speechrnn.tracking.runs"):
        for step in range(3):
            tracker.log_metrics({"dev_wer": 0.5}, step=step)
        tracker.end()
    assert len(caplog.records) == 2  # it fails; at the end, what was not logged
    assert "3 tracking calls" in caplog.records[1].getMessage()
    assert mlflow.MlflowClient(store).get_run(tracker.run_id).info.status == "FINISHED"


def test_a_request_the_store_refuses_still_raises(store):
    import mlflow

    tracker = make_tracker(config("tiny", uri=store))
    with pytest.raises(mlflow.exceptions.MlflowException):
        tracker.start("0" * 32)  # no such run
    assert tracker.start() == tracker.run_id  # and the tracker goes on
    tracker.end()
