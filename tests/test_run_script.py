"""pipelines/run.py (the recipe script) and the MLproject entry points, on the tiny
synthetic corpus."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT


def env_for(uri: str) -> dict:
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "SPEECHRNN_PROGRESS": "0",
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}


def test_run_py_evaluates_and_transcribes_a_trained_model(trained, tmp_path):
    """The evaluate stage tunes the LM weights on dev and saves the chosen decoding with the
    model, registered again; run on a copy of the trained run and its store (they change)."""
    import json

    import mlflow

    from speechrnn.tracking import download_model
    from speechrnn.transcribe import load_transcriber

    store = Path(trained.uri.removeprefix("sqlite:///"))
    shutil.copy(store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = yaml.safe_load(Path(trained.config).read_text())
    shutil.copytree(config["train"]["workdir"], tmp_path / "run")
    config["train"]["workdir"] = str(tmp_path / "run")
    config["tracking"]["uri"] = uri
    copy = tmp_path / Path(trained.config).name  # its name names the registered model
    copy.write_text(yaml.safe_dump(config))
    model_dir = tmp_path / "run" / "model"
    assert json.loads((model_dir / "inference.json").read_text())["decoder"] == "greedy"
    client = mlflow.MlflowClient(uri)
    status = client.get_run(trained.run_id).info.status  # as the run left it
    proc = subprocess.run([sys.executable, "pipelines/run.py", "--config", str(copy),
                           "--stages", "evaluate,transcribe", "--quiet",
                           "--set", "eval.tune_lm_weights=[0.2, 1.0]",
                           "--set", "eval.tune_word_bonuses=[0.0, 2.0]"], cwd=ROOT,
                          capture_output=True, text=True, env=env_for(uri))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    chosen = re.search(r"LM weight (\S+), word bonus (\S+): chosen on dev among 4 pairs", out)
    assert chosen, out
    assert "test (greedy): WER" in out and (f"test (beam 16 + word LM (weight {chosen[1]}, "
                                            f"word bonus {chosen[2]})): WER") in out
    table = (tmp_path / "run" / "lm_tuning.tsv").read_text().splitlines()
    assert table[0] == "lm_weight\tword_bonus\twer\tcer" and len(table) == 5
    assert "reference:" in out and "hypothesis:" in out
    assert f"run {trained.run_id}" in out and "speechrnn ui" in out
    metrics = client.get_run(trained.run_id).data.metrics
    assert {"test_greedy_wer", "test_beam_lm_wer", "test_greedy_cer"} <= set(metrics)
    assert metrics["dev_tuned_lm_weight"] in (0.2, 1.0)
    assert metrics["dev_tuned_word_bonus"] in (0.0, 2.0)
    chosen = [r.split("\t") for r in table[1:]]
    assert min(float(r[2]) for r in chosen) == pytest.approx(metrics["dev_tuned_wer"], abs=1e-4)
    # the tuned beam search + LM is now the model's own, and registered as version 2
    assert "saved with the model" in out and "registered again" in out
    saved = json.loads((model_dir / "inference.json").read_text())
    assert saved["decoder"] == "beam" and saved["lm"] == "lm.arpa"
    assert (saved["lm_weight"], saved["word_bonus"]) == (metrics["dev_tuned_lm_weight"],
                                                         metrics["dev_tuned_word_bonus"])
    assert load_transcriber(model_dir).options.lm_weight == saved["lm_weight"]
    versions = client.search_model_versions(f"name='{trained.name}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert json.loads((model_dir / "mlflow.json").read_text())["version"] == 2
    assert client.get_run(trained.run_id).info.status == status  # logging again keeps it
    registered = download_model(f"models:/{trained.name}/2", uri)
    assert (registered / "lm.arpa").is_file() and (registered / "inference.json").is_file()


def test_prepare_stage_loads_neither_tensorflow_nor_mlflow(trained):
    """Preparing data is light: the stage imports neither TensorFlow nor MLflow."""
    check = ("import runpy, sys\n"
             f"sys.argv = ['run.py', '--config', {str(trained.config)!r}, '--stages', 'prepare',"
             " '--quiet']\n"
             "try:\n    runpy.run_path('pipelines/run.py', run_name='__main__')\n"
             "except SystemExit as stop:\n    assert not stop.code, stop.code\n"
             "heavy = sorted({'tensorflow', 'keras', 'mlflow'} & set(sys.modules))\n"
             "print('heavy:', heavy)\n")
    proc = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True,
                          text=True, env=env_for(trained.uri))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already there" in proc.stdout and "heavy: []" in proc.stdout


@pytest.mark.slow
def test_mlflow_run_trains_through_the_mlproject(trained, tmp_path):
    config = yaml.safe_load(Path(trained.config).read_text())
    config["train"].update(epochs=1, workdir=str(tmp_path / "run"))
    config["data"]["cache"] = str(tmp_path / "cache")
    del config["tracking"]  # the store is the one `mlflow run` uses: MLFLOW_TRACKING_URI
    path = tmp_path / "mlproject.yaml"
    path.write_text(yaml.safe_dump(config))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow_cli = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    proc = subprocess.run([mlflow_cli, "run", ".", "-e", "train", "--env-manager", "local",
                           "--experiment-name", "speechrnn-mlproject", "-P",
                           f"config={path}"], cwd=ROOT, capture_output=True, text=True,
                          env=env_for(uri), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("speechrnn-mlproject")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "dev_wer")] == [0]
    assert run.data.params["config"] == str(path)  # the entry point's parameter
    assert (tmp_path / "run" / "model" / "model.onnx").exists()
