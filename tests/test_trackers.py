"""Experiment trackers: runs are written for real and read back with each tracker's own API."""

import importlib.util
import logging
import sys

import pytest

from voxadapt.errors import ConfigError
from voxadapt.trackers import (
    TRACKERS,
    Trackers,
    flatten_params,
    hf_tag,
    mlflow_key,
    tracker_problems,
)

CHOICES = ", ".join(TRACKERS)

PARAMS = {
    "lr": 1e-4,
    "batch_size": 8,
    "bf16": True,
    "train": "/data/train.jsonl",
    "max_steps": None,
    "decode": {"batch_size": 16, "language": "ko"},
}
FLAT_PARAMS = {
    "lr": 1e-4,
    "batch_size": 8,
    "bf16": True,
    "train": "/data/train.jsonl",
    "max_steps": "None",
    "decode.batch_size": 16,
    "decode.language": "ko",
}
STEPS = [
    (1, {"loss": 2.5, "learning_rate": 1e-4, "grad_norm": 3.0, "epoch": 0.5}),
    (2, {"loss": 2.0, "learning_rate": 9e-5, "grad_norm": 2.0, "epoch": 1.0}),
    (2, {"eval_cer": 0.25, "eval_wer": 0.5, "eval_loss": 1.75, "epoch": 1.0}),
]


def log_steps(trackers: Trackers, steps=STEPS) -> None:
    for step, metrics in steps:
        trackers.log(metrics, step)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["tensorboard"], []),
        (["none"], []),
        (["tensorboard", "mlflow", "wandb", "trackio"], []),
        (["mlflow", "mlflow"], []),
        ([], []),
        (["tensorbord"], [f"report_to: unknown tracker 'tensorbord' (choose from {CHOICES})"]),
        (["TensorBoard"], [f"report_to: unknown tracker 'TensorBoard' (choose from {CHOICES})"]),
        (["none", "mlflow"], ["report_to: 'none' cannot be combined with other trackers"]),
        (["none", "none"], []),
        (
            ["x", "none", "x", "tensorboard"],
            [
                f"report_to: unknown tracker 'x' (choose from {CHOICES})",
                "report_to: 'none' cannot be combined with other trackers",
            ],
        ),
    ],
)
def test_tracker_problems(names, expected):
    assert tracker_problems(names) == expected


@pytest.mark.parametrize(
    ("key", "tag"),
    [
        ("loss", "train/loss"),
        ("learning_rate", "train/learning_rate"),
        ("grad_norm", "train/grad_norm"),
        ("epoch", "train/epoch"),
        ("eval_cer", "eval/cer"),
        ("eval_wer", "eval/wer"),
        ("test_cer", "test/cer"),
        ("train_loss", "train/train_loss"),  # as transformers' rewrite_logs does
        ("evaluation", "train/evaluation"),
    ],
)
def test_hf_tag(key, tag):
    assert hf_tag(key) == tag


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("eval_cer", "eval_cer"),
        ("train/loss", "train/loss"),
        ("decode.batch_size", "decode.batch_size"),
        ("loss@peak", "loss_peak"),
        ("time:s", "time_s"),  # ':' is rejected on Windows
        ("a//b/", "a/b"),
        ("../x/./y", "x/y"),
        ("/", "_"),
        ("한국어_cer", "한국어_cer"),
        ("k" * 300, "k" * 250),
    ],
)
def test_mlflow_key(key, expected):
    assert mlflow_key(key) == expected


def test_flatten_params():
    assert flatten_params(PARAMS) == FLAT_PARAMS
    assert flatten_params({"a": {"b": {"c": [1, 2]}}}) == {"a.b.c": "[1, 2]"}


def test_none_starts_nothing(tmp_path):
    with Trackers(["none"], tmp_path / "run", run_name="r") as trackers:
        trackers.log_params(PARAMS)
        log_steps(trackers)
    assert not (tmp_path / "run").exists()


def test_unknown_tracker_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown tracker 'mlflw'"):
        Trackers(["mlflw"], tmp_path, run_name="r")


def test_missing_library_is_a_one_line_config_error(tmp_path, monkeypatch):
    missing = next(
        (name for name in ("trackio", "wandb") if importlib.util.find_spec(name) is None), None
    )
    if missing is None:  # both installed: None in sys.modules makes the import really fail
        missing = "trackio"
        monkeypatch.setitem(sys.modules, "trackio", None)
    with pytest.raises(ConfigError) as caught:
        Trackers(["tensorboard", missing], tmp_path, run_name="r")
    message = str(caught.value)
    assert "\n" not in message
    assert message == (
        f'--report-to {missing}: {missing} is not installed; pip install "voxadapt[{missing}]"'
    )
    # checked before any tracker starts: no half-made TensorBoard run
    assert not (tmp_path / "tensorboard").exists()


def test_every_missing_library_is_reported_at_once(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # the import fails for real
    monkeypatch.setitem(sys.modules, "trackio", None)
    with pytest.raises(ConfigError) as caught:
        Trackers(["wandb", "trackio"], tmp_path, run_name="r")
    assert caught.value.problems == [
        '--report-to wandb: wandb is not installed; pip install "voxadapt[wandb]"',
        '--report-to trackio: trackio is not installed; pip install "voxadapt[trackio]"',
    ]
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------------ TensorBoard


def read_tensorboard(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    scalars = {
        tag: [(event.step, event.value) for event in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
    }
    texts = {
        tag: [event.tensor_proto.string_val[0].decode() for event in events.Tensors(tag)]
        for tag in events.Tags()["tensors"]
    }
    return scalars, texts


def test_tensorboard_run_reads_back(tmp_path):
    with Trackers(["tensorboard"], tmp_path, run_name="r") as trackers:
        trackers.log_params(PARAMS)
        log_steps(trackers)
        trackers.log({"eval_cer": None, "note": "text"}, 3)  # nothing plottable: skipped
    scalars, texts = read_tensorboard(tmp_path / "tensorboard")
    assert scalars == {
        "train/loss": [(1, 2.5), (2, 2.0)],
        "train/learning_rate": [(1, pytest.approx(1e-4)), (2, pytest.approx(9e-5))],
        "train/grad_norm": [(1, 3.0), (2, 2.0)],
        "train/epoch": [(1, 0.5), (2, 1.0), (2, 1.0)],
        "eval/cer": [(2, 0.25)],
        "eval/wer": [(2, 0.5)],
        "eval/loss": [(2, 1.75)],
    }
    (table,) = texts["params/text_summary"]
    assert "| decode.batch_size | 16 |" in table
    assert "| max_steps | None |" in table


def test_tensorboard_resume_drops_steps_after_the_checkpoint(tmp_path):
    with Trackers(["tensorboard"], tmp_path, run_name="r") as trackers:
        for step in range(1, 6):
            trackers.log({"loss": float(step)}, step)
    # killed after step 5, resumed from the checkpoint at step 3: steps 4-5 are logged again
    with Trackers(["tensorboard"], tmp_path, run_name="r", resume_step=3) as trackers:
        for step in (4, 5, 6):
            trackers.log({"loss": 10.0 * step}, step)
    scalars, _ = read_tensorboard(tmp_path / "tensorboard")
    assert scalars["train/loss"] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)]


# ----------------------------------------------------------------------------- MLflow


@pytest.fixture
def mlflow_env(monkeypatch):
    """MLflow with no tracking settings from the environment (the default file store)."""
    pytest.importorskip("mlflow")
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(name, raising=False)  # restored (removed) after the test


def mlflow_client(output_dir):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=(output_dir / "mlruns").resolve().as_uri())


def metric_history(client, run_id, key):
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_mlflow_run_reads_back(tmp_path, mlflow_env):
    with Trackers(["mlflow"], tmp_path, run_name="korean-medical") as trackers:
        trackers.log_params({**PARAMS, "notes": "x" * 7000, "lr@peak": 2e-4})
        log_steps(trackers)
    run_id = (tmp_path / "mlflow_run_id").read_text().strip()
    client = mlflow_client(tmp_path)
    run = client.get_run(run_id)
    assert run.info.run_name == "korean-medical"
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "voxadapt"
    params = run.data.params
    assert {key: params[key] for key in FLAT_PARAMS} == {
        key: str(value) for key, value in FLAT_PARAMS.items()
    }
    assert params["lr@peak".replace("@", "_")] == "0.0002"
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    assert len(params["notes"]) == MAX_PARAM_VAL_LENGTH and params["notes"].endswith("...")
    assert metric_history(client, run_id, "loss") == [(1, 2.5), (2, 2.0)]
    assert metric_history(client, run_id, "eval_cer") == [(2, 0.25)]
    assert metric_history(client, run_id, "epoch") == [(1, 0.5), (2, 1.0), (2, 1.0)]
    assert set(run.data.metrics) == {
        "loss",
        "learning_rate",
        "grad_norm",
        "epoch",
        "eval_cer",
        "eval_wer",
        "eval_loss",
    }


def test_mlflow_resume_continues_the_same_run(tmp_path, mlflow_env, caplog):
    with Trackers(["mlflow"], tmp_path, run_name="r") as trackers:
        trackers.log_params(PARAMS)
        log_steps(trackers, [(1, {"loss": 3.0}), (2, {"loss": 2.0})])
    first_id = (tmp_path / "mlflow_run_id").read_text().strip()

    caplog.set_level(logging.WARNING, logger="voxadapt.trackers")
    with Trackers(["mlflow"], tmp_path, run_name="r", resume_step=2) as trackers:
        trackers.log_params({**PARAMS, "batch_size": 4})  # immutable in MLflow: warned
        log_steps(trackers, [(3, {"loss": 1.0})])
    assert "batch_size" in caplog.text
    assert (tmp_path / "mlflow_run_id").read_text().strip() == first_id
    client = mlflow_client(tmp_path)
    run = client.get_run(first_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["batch_size"] == "8"
    assert metric_history(client, first_id, "loss") == [(1, 3.0), (2, 2.0), (3, 1.0)]

    # a fresh training in the same folder is a new run
    with Trackers(["mlflow"], tmp_path, run_name="r"):
        pass
    second_id = (tmp_path / "mlflow_run_id").read_text().strip()
    assert second_id != first_id
    experiment_id = run.info.experiment_id
    assert len(client.search_runs([experiment_id])) == 2


def test_mlflow_respects_tracking_uri(tmp_path, mlflow_env, monkeypatch):
    store = tmp_path / "elsewhere"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    with Trackers(["mlflow"], tmp_path / "run", run_name="r") as trackers:
        log_steps(trackers)
    from mlflow import MlflowClient

    run_id = (tmp_path / "run" / "mlflow_run_id").read_text().strip()
    client = MlflowClient(tracking_uri=store.as_uri())
    assert metric_history(client, run_id, "loss") == [(1, 2.5), (2, 2.0)]
    assert not (tmp_path / "run" / "mlruns").exists()


# ---------------------------------------------------- W&B and Trackio (when installed)


def test_wandb_offline_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    with Trackers(["wandb"], tmp_path, run_name="r") as trackers:
        trackers.log_params(PARAMS)
        log_steps(trackers)
        trackers.log({"loss": 1.5}, 3)  # W&B commits step 2 (train and eval merged) at step 3
        # offline runs keep their history in a binary .wandb file: read the live run instead
        (tracker,) = trackers.trackers
        assert tracker.run.summary["train/loss"] == 2.0
        assert tracker.run.summary["eval/cer"] == 0.25
        assert tracker.run.config["decode.batch_size"] == 16
    run_id = (tmp_path / "wandb_run_id").read_text().strip()
    assert tracker.run.id == run_id
    assert list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))


def test_trackio_local_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))  # read when trackio is imported
    if "trackio" in sys.modules:
        pytest.skip("trackio was imported before TRACKIO_DIR could be set")
    pytest.importorskip("trackio")
    from trackio.sqlite_storage import SQLiteStorage

    with Trackers(["trackio"], tmp_path, run_name="r") as trackers:
        trackers.log_params(PARAMS)
        log_steps(trackers)
    logs = SQLiteStorage.get_logs("voxadapt", "r")
    assert [(row["step"], row.get("train/loss")) for row in logs][:2] == [(1, 2.5), (2, 2.0)]
    assert any(row.get("eval/cer") == 0.25 for row in logs)


def test_wandb_without_a_login_is_refused_before_any_work(tmp_path, monkeypatch):
    from voxadapt.trackers import _login_problem

    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert "WANDB_MODE=offline" in _login_problem("wandb")
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    (tmp_path / "netrc").chmod(0o600)
    assert _login_problem("wandb") is None
    (tmp_path / "netrc").unlink()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert _login_problem("wandb") is None
    assert _login_problem("tensorboard") is None


def test_tensorboard_hparams_view_holds_the_run_and_its_final_metrics(tmp_path):
    """Hyperparameters reach the HParams view in the run's own event file (not a second
    run in a subfolder), with the metrics it compares runs by declared: their values are
    the run's own last scalars."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    with Trackers(["tensorboard"], tmp_path, run_name="r") as trackers:
        trackers.log_params({**PARAMS, "lora_r": 8, "train_modules": ["projector", "llm"]})
        log_steps(trackers)
        trackers.log({"eval_cer": 0.2, "best_cer": 0.2}, 3)
    event_files = list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    assert len(event_files) == 1  # one run: hparams beside its scalars
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    assert start.hparams["lr"].number_value == pytest.approx(1e-4)
    assert start.hparams["lora_r"].number_value == 8
    assert start.hparams["decode.language"].string_value == "ko"
    assert start.hparams["train_modules"].string_value == "['projector', 'llm']"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]
    ).experiment
    metrics = [info.name.tag for info in experiment.metric_infos]
    assert metrics == ["train/loss", "eval/cer", "train/best_cer", "eval/wer"]
    last = {tag: events.Scalars(tag)[-1].value for tag in metrics}
    assert last == {
        "train/loss": 2.0,
        "eval/cer": pytest.approx(0.2),
        "train/best_cer": pytest.approx(0.2),
        "eval/wer": 0.5,
    }
