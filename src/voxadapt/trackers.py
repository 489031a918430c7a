"""Experiment trackers for `voxadapt train --report-to`: TensorBoard, MLflow, W&B, Trackio.

Metric keys follow the Hugging Face Trainer's names (`loss`, `learning_rate`, `eval_cer`, ...)
and each tracker shows them as the Trainer's own callback for it does: TensorBoard, W&B and
Trackio get `train/loss` and `eval/cer`; MLflow gets the plain keys. Only TensorBoard is a core
dependency; the others are imported when asked for and come with an extra
(`pip install "voxadapt[mlflow]"`).
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import re
import secrets
import string
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from voxadapt.errors import ConfigError
from voxadapt.manifest import atomic_write

log = logging.getLogger(__name__)

TRACKERS = ("tensorboard", "mlflow", "wandb", "trackio", "none")

# tracker -> (module it needs, how to install it)
_REQUIREMENTS = {
    "tensorboard": ("tensorboard", 'pip install "tensorboard>=2.15"'),
    "mlflow": ("mlflow", 'pip install "voxadapt[mlflow]"'),
    "wandb": ("wandb", 'pip install "voxadapt[wandb]"'),
    "trackio": ("trackio", 'pip install "voxadapt[trackio]"'),
}

PROJECT = "voxadapt"  # MLflow experiment, W&B and Trackio project

ParamValue = str | int | float | bool


def tracker_problems(names: Sequence[str]) -> list[str]:
    """Every problem with a `--report-to` list: unknown names, `none` beside real trackers.

    Whether a tracker's library is installed is checked when `Trackers` starts it.
    """
    problems = [
        f"report_to: unknown tracker {name!r} (choose from {', '.join(TRACKERS)})"
        for name in dict.fromkeys(names)
        if name not in TRACKERS
    ]
    if "none" in names and len(set(names)) > 1:
        problems.append("report_to: 'none' cannot be combined with other trackers")
    return problems


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, ParamValue]:
    """Nested config dicts as dotted keys (`decode.batch_size`), values str/int/float/bool.

    None becomes "None"; paths, lists and other values become their str().
    """
    flat: dict[str, ParamValue] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_params(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def hf_tag(key: str) -> str:
    """The Hugging Face Trainer's tag for a metric key: `eval_cer` -> `eval/cer`, `loss` ->
    `train/loss` (transformers' `rewrite_logs`)."""
    for split in ("eval", "test"):
        if key.startswith(f"{split}_"):
            return f"{split}/{key.removeprefix(f'{split}_')}"
    return f"train/{key}"


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics a tracker can plot: None (not measured this step) and non-numbers dropped."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


class _Tracker(Protocol):
    def log_params(self, params: dict[str, ParamValue]) -> None: ...
    def log(self, metrics: dict[str, float], step: int) -> None: ...
    def close(self) -> None: ...


class Trackers:
    """The trackers named by `--report-to`, started together; the trainer talks only to this.

    Only rank 0 creates one. `resume_step` > 0 continues a run: TensorBoard drops events after
    that step (a killed run's tail), MLflow and W&B reopen the run whose id is stored in
    `output_dir`, Trackio resumes the run named `run_name`.
    """

    def __init__(
        self, names: Sequence[str], output_dir: Path, *, run_name: str, resume_step: int = 0
    ) -> None:
        problems = tracker_problems(names)
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems), problems)
        wanted = [name for name in dict.fromkeys(names) if name != "none"]
        # every missing library is reported, together, before any run starts
        missing = [problem for name in wanted if (problem := _import_problem(name))]
        if missing:
            raise ConfigError("; ".join(missing), missing)
        output_dir = Path(output_dir)
        if wanted:
            output_dir.mkdir(parents=True, exist_ok=True)
        starters = {
            "tensorboard": TensorBoardTracker,
            "mlflow": MlflowTracker,
            "wandb": WandbTracker,
            "trackio": TrackioTracker,
        }
        self.names = wanted
        self.trackers: list[_Tracker] = []
        try:
            for name in wanted:
                tracker = starters[name](output_dir, run_name=run_name, resume_step=resume_step)
                self.trackers.append(tracker)
        except BaseException:
            self.close()  # no run left marked as running by a half-started set
            raise

    def log_params(self, params: dict[str, Any]) -> None:
        """Record the run's configuration once; nested dicts are flattened to dotted keys."""
        flat = flatten_params(params)
        for tracker in self.trackers:
            tracker.log_params(flat)

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record one step's metrics (Hugging Face names); None and non-numbers are skipped."""
        values = _numeric(metrics)
        if not values:
            return
        for tracker in self.trackers:
            tracker.log(values, step)

    def close(self) -> None:
        """Finish every run and flush its files; safe to call twice."""
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            try:
                tracker.close()
            except Exception:  # the others must still close
                log.exception("closing %s failed", type(tracker).__name__)

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def missing_libraries(names: Sequence[str]) -> list[str]:
    """One line per requested tracker whose library is not installed (checked before any
    model loads, so a typo in the environment does not cost the model load)."""
    return [
        p
        for name in dict.fromkeys(names)
        if name != "none" and (p := _import_problem(name) or _login_problem(name))
    ]


def _login_problem(name: str) -> str | None:
    """W&B that would stop at its login prompt, or fail, after the model has loaded."""
    if name != "wandb":
        return None
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return None
    if os.environ.get("WANDB_API_KEY"):
        return None
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        if netrc.netrc(os.environ.get("NETRC")).authenticators(host or "api.wandb.ai"):
            return None
    except (OSError, netrc.NetrcParseError):
        pass
    return (
        "--report-to wandb: not logged in to W&B; run `wandb login`, set WANDB_API_KEY, "
        "or set WANDB_MODE=offline to log locally (`wandb sync` later)"
    )


def _import_problem(name: str) -> str | None:
    """Why the module tracker `name` needs cannot be imported, with the command that installs
    it (one line); None if it imports."""
    module, install = _REQUIREMENTS[name]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        if exc.name == module:  # the library itself is missing, not something inside it
            reason = f"{module} is not installed"
        else:
            reason = f"{module} cannot be imported ({' '.join(str(exc).split())})"
        return f"--report-to {name}: {reason}; {install}"
    return None


def _stored_run_id(path: Path, resume_step: int) -> str | None:
    """The run id a resumed training continues (None for a fresh run or none stored)."""
    if resume_step > 0 and path.is_file():
        return path.read_text(encoding="utf-8").strip() or None
    return None


def _store_run_id(path: Path, run_id: str) -> None:
    with atomic_write(path) as handle:
        handle.write(run_id + "\n")


# The metrics the TensorBoard HParams view shows beside each run's hyperparameters: the last
# training loss, the last and the best evaluation CER (the trainer's `best_cer`), the last WER.
HPARAMS_METRICS = tuple(hf_tag(key) for key in ("loss", "eval_cer", "best_cer", "eval_wer"))


class TensorBoardTracker:
    """Event files under `output_dir/tensorboard`, tagged as the Hugging Face Trainer does."""

    def __init__(self, output_dir: Path, *, run_name: str, resume_step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run hides the events a killed run wrote after its checkpoint.
        self.writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=resume_step + 1)

    def log_params(self, params: dict[str, ParamValue]) -> None:
        rows = "\n".join(f"| {key} | {_markdown_cell(value)} |" for key, value in params.items())
        self.writer.add_text("params", "| parameter | value |\n|---|---|\n" + rows)
        # The HParams view, in this run's own event file: torch's add_hparams would write a
        # second run in a timestamped subfolder and needs final metrics up front. Declaring
        # the metrics' tags is enough: the view shows each tag's last value in this run, so
        # runs compare by their final loss and CER as they train.
        from torch.utils.tensorboard.summary import hparams

        experiment, session_start, _ = hparams(dict(params), {tag: 0.0 for tag in HPARAMS_METRICS})
        for summary in (experiment, session_start):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(hf_tag(key), value, step)
        self.writer.flush()  # `tensorboard --logdir` shows a step as soon as it is logged

    def close(self) -> None:
        self.writer.close()


def _markdown_cell(value: ParamValue) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


# MLflow's limits (mlflow.utils.validation): keys of 250 characters, 100 params and 1000
# metrics per batch request; the param value limit is read from the installed MLflow.
_MLFLOW_MAX_KEY = 250
_MLFLOW_PARAMS_PER_BATCH = 100
_MLFLOW_METRICS_PER_BATCH = 1000
# MLflow accepts alphanumerics, _ - . / and space (and ':' except on Windows, so not here).
_MLFLOW_BAD_CHARACTERS = re.compile(r"[^\w\-. /]")


def mlflow_key(key: str) -> str:
    """`key` as a name MLflow accepts: bad characters become `_`, no empty, `.` or `..`
    path segments (MLflow rejects names that normalize to another path), at most 250
    characters."""
    segments = _MLFLOW_BAD_CHARACTERS.sub("_", key).split("/")
    cleaned = "/".join(s for s in segments if s.strip() not in ("", ".", ".."))
    return cleaned[:_MLFLOW_MAX_KEY] or "_"


class MlflowTracker:
    """An MLflow run in experiment `voxadapt`; by default a file store in `output_dir/mlruns`.

    `MLFLOW_TRACKING_URI` (and `MLFLOW_EXPERIMENT_NAME`) override the defaults, as for the
    Hugging Face Trainer. The run id is kept in `output_dir/mlflow_run_id` so a resumed training
    continues the same run.
    """

    def __init__(self, output_dir: Path, *, run_name: str, resume_step: int = 0) -> None:
        from mlflow import MlflowClient

        tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not tracking_uri:
            tracking_uri = (output_dir / "mlruns").resolve().as_uri()
            # MLflow 3 keeps the file store (no database, works offline) but refuses it unless
            # opted in; a user who set the variable keeps their choice.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        # An explicit client, not mlflow.start_run(): no process-wide active run or tracking
        # URI is changed behind the user's back.
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        id_file = output_dir / "mlflow_run_id"
        self.run_id = self._resumed_run(_stored_run_id(id_file, resume_step))
        if self.run_id is None:
            experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or PROJECT
            experiment = self.client.get_experiment_by_name(experiment_name)
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else self.client.create_experiment(experiment_name)
            )
            run = self.client.create_run(experiment_id, run_name=run_name)
            self.run_id = run.info.run_id
            _store_run_id(id_file, self.run_id)
        log.info("MLflow run %s at %s", self.run_id, tracking_uri)

    def _resumed_run(self, run_id: str | None) -> str | None:
        """Reopen run `run_id` (status RUNNING again); None if there is none to reopen."""
        if run_id is None:
            return None
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
        except MlflowException:
            log.warning(
                "MLflow run %s (mlflow_run_id) is not in %s; starting a new run",
                run_id,
                self.tracking_uri,
            )
            return None
        self.client.update_run(run_id, status="RUNNING")
        return run_id

    def log_params(self, params: dict[str, ParamValue]) -> None:
        from mlflow.entities import Param
        from mlflow.utils import validation

        max_length = getattr(validation, "MAX_PARAM_VAL_LENGTH", 500)
        logged = self.client.get_run(self.run_id).data.params
        values: dict[str, str] = {}
        for key, value in params.items():
            text = str(value)
            if len(text) > max_length:
                log.warning("MLflow param %s truncated to %d characters", key, max_length)
                text = text[: max_length - 3] + "..."
            values[mlflow_key(key)] = text
        # MLflow params are immutable: a resumed run keeps its first values. A change (say,
        # more max_steps) is only warned about, since logging it again would fail.
        changed = sorted(k for k, v in values.items() if k in logged and logged[k] != v)
        if changed:
            log.warning("MLflow keeps the run's first values of %s", ", ".join(changed))
        new = [Param(k, v) for k, v in values.items() if k not in logged]
        for start in range(0, len(new), _MLFLOW_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=new[start : start + _MLFLOW_PARAMS_PER_BATCH])

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        timestamp_ms = int(time.time() * 1000)
        entries = [
            Metric(mlflow_key(key), value, timestamp_ms, step)
            for key, value in metrics.items()
            if math.isfinite(value)  # MLflow stores NaN/inf, but its plots break on them
        ]
        for start in range(0, len(entries), _MLFLOW_METRICS_PER_BATCH):
            batch = entries[start : start + _MLFLOW_METRICS_PER_BATCH]
            self.client.log_batch(self.run_id, metrics=batch)

    def close(self) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED")


class WandbTracker:
    """A Weights & Biases run in project `voxadapt`; WANDB_MODE=offline works without network.

    The run id is kept in `output_dir/wandb_run_id` so a resumed training continues the run.
    """

    def __init__(self, output_dir: Path, *, run_name: str, resume_step: int = 0) -> None:
        import wandb

        id_file = output_dir / "wandb_run_id"
        run_id = _stored_run_id(id_file, resume_step) or _new_wandb_id()
        self.run = wandb.init(
            project=PROJECT, name=run_name, dir=str(output_dir), resume="allow", id=run_id
        )
        _store_run_id(id_file, run_id)

    def log_params(self, params: dict[str, ParamValue]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log({hf_tag(key): value for key, value in metrics.items()}, step=step)

    def close(self) -> None:
        self.run.finish()


def _new_wandb_id() -> str:
    # W&B's own ids are 8 lowercase letters and digits; its generator moved between releases.
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


class TrackioTracker:
    """A Trackio run in project `voxadapt` (a local database unless TRACKIO_SPACE_ID is set)."""

    def __init__(self, output_dir: Path, *, run_name: str, resume_step: int = 0) -> None:
        import trackio

        self.trackio = trackio
        self.run = trackio.init(
            project=PROJECT, name=run_name, resume="allow" if resume_step > 0 else "never"
        )

    def log_params(self, params: dict[str, ParamValue]) -> None:
        # Trackio attaches the run's config to its first logged step, so before any log()
        # updating it is the same as passing config= to trackio.init().
        self.run.config.update(params)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.trackio.log({hf_tag(key): value for key, value in metrics.items()}, step=step)

    def close(self) -> None:
        self.trackio.finish()
