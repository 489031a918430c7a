"""The compare stage: which base (or adapter) transcribes *your* data best.

Each `--system` (a hub id, a model folder, or an adapter folder, which implies its base) runs
through the evaluation engine of `voxadapt evaluate` into `OUT/systems/NAME/`, one model in
memory at a time, resumable per system (a second run decodes nothing it has). Then one table:
CER, multi-reference CER, WER and term recall with speaker-bootstrap 95% CIs, real-time factor
and memory per system, and every system's paired difference against the best, with its CI and
p-value (fewer than 5 shared speakers: the difference only). `compare.json` for scripts,
`report.html` for people.
"""

from __future__ import annotations

import gc
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from voxadapt.adapters import ADAPTER_INFO, base_model_of, read_adapter_info
from voxadapt.config import Config, option, save_config
from voxadapt.decoding import DecodeOptions
from voxadapt.errors import ConfigError, ModelError
from voxadapt.evaluation import DecodeUsage, EvaluateConfig, run_evaluation
from voxadapt.families import family_of, load_config
from voxadapt.manifest import atomic_write
from voxadapt.model import DTYPES, QUANTIZATIONS, check_device
from voxadapt.outputs import claim_outputs
from voxadapt.scoring.intervals import MIN_INTERVAL_SPEAKERS, paired_bootstrap
from voxadapt.scoring.rows import read_references
from voxadapt.text import SCORING_POLICIES
from voxadapt.units import p_value, percent

log = logging.getLogger(__name__)

SYSTEMS = "systems"  # OUT/systems/NAME/: each system's evaluate outputs
USAGE = "usage.json"  # beside them: what its last decoding cost
OUTPUTS = ("compare.json", "report.html", "compare_config.yaml", SYSTEMS)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
HEADLINE = ("cer", "cer_multi_reference", "wer")


@dataclass
class CompareConfig(Config):
    """Options of `voxadapt compare` (the YAML keys of `--config`)."""

    manifest: Path | None = option(
        None, help="JSONL with references (test.jsonl)", positional=True, metavar="MANIFEST"
    )
    systems: list[str] = option(
        help="a system to compare: [NAME=]MODEL_OR_ADAPTER, a hub id, a model folder or an "
        "adapter folder (which implies its base); repeat for each (at least two)",
        default_factory=list,
        flag="--system",
        metavar="[NAME=]MODEL",
        repeatable=True,
    )
    out_dir: Path = option(Path("runs/compare"), help="output folder", flag="--out", metavar="DIR")
    decode: DecodeOptions = option(help="decoding options", default_factory=DecodeOptions)
    terms: Path | None = option(
        None, help="medical terms, one per line, for term recall", metavar="FILE"
    )
    normalize: str = option(
        "default",
        help="scoring normalization: default, or numbers (digits read as Korean)",
        choices=tuple(SCORING_POLICIES),
        metavar="POLICY",
    )
    limit: int | None = option(None, help="only the first N utterances")
    bootstrap: int = option(1000, help="bootstrap resamples for 95% CIs (0 = off)")
    seed: int = option(0, help="bootstrap seed")
    quantization: str | None = option(
        None,
        help="LLM weights of every system (default: as each adapter was trained; nf4 without)",
        choices=QUANTIZATIONS,
    )
    dtype: str | None = option(
        None, help="compute dtype (default bf16 on GPU, fp32 on CPU)", choices=tuple(DTYPES)
    )
    device: str | None = option(None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    overwrite: bool = option(
        False,
        help="decode every system again (earlier outputs go to systems/NAME/replaced/)",
        invocation=True,
    )
    report: bool = option(True, help="write report.html")

    def problems(self) -> list[str]:
        found = super().problems()
        if self.manifest is None:
            found.append("a manifest is required")
        elif not Path(self.manifest).is_file():
            found.append(f"manifest {self.manifest} does not exist")
        if len(self.systems) < 2:
            found.append("--system: give at least two systems to compare")
        if self.terms is not None and not Path(self.terms).is_file():
            found.append(f"--terms file {self.terms} does not exist")
        if self.limit is not None and self.limit < 1:
            found.append("limit must be >= 1")
        if self.bootstrap < 0:
            found.append("bootstrap must be >= 0")
        return found + check_device(self.device)


@dataclass
class System:
    """One compared system: a base model, with or without an adapter."""

    name: str
    model: str
    adapter: Path | None
    family: str
    quantization: str  # of its LLM: what it runs with, recorded in the table


@dataclass
class CompareResult:
    table: list[dict[str, Any]]  # one row per system, best first
    verdicts: list[str]
    compare_json: Path
    report: Path | None
    decoded: dict[str, int] = field(default_factory=dict)  # utterances decoded now, per system


def _default_name(model: str, adapter: Path | None) -> str:
    """The model folder's or hub id's last part (+ the adapter's run), made a safe folder
    name: `Qwen3-ASR-1.7B-hf`, `Voxtral-Mini-3B-2507+ko-med`."""
    base = Path(model.rstrip("/")).name or model
    if adapter is not None:
        run = adapter.parent.name if adapter.name == "adapter" else adapter.name
        base = f"{base}+{run}"
    return re.sub(r"[^A-Za-z0-9._+-]", "_", base).lstrip("._+-")[:64] or "system"


def resolve_systems(specs: list[str], quantization: str | None = None) -> list[System]:
    """[NAME=]MODEL_OR_ADAPTER specs as systems, each checked (readable config, a supported
    family, an adapter on its own base) before anything loads."""
    systems: list[System] = []
    for spec in specs:
        name, sep, value = spec.partition("=")
        # no NAME= prefix: none given, or the whole spec is a path that holds '='
        if not sep or "/" in name or not name or Path(spec).expanduser().exists():
            name, value = "", spec
        if not value:
            raise ConfigError(f"--system {spec}: give a model or adapter after {name}=")
        path = Path(value).expanduser()
        adapter = path if (path / ADAPTER_INFO).is_file() else None
        model = base_model_of(None, adapter) if adapter is not None else value
        info = read_adapter_info(adapter) if adapter is not None else {}
        try:
            load_config(model)  # every base readable (and a hub id cached) before decoding
            family = family_of(model)
        except ModelError as exc:
            whose = f"the base of the adapter {adapter}" if adapter else "the model"
            raise ModelError(f"--system {spec}: {whose}: {exc}") from None
        name = name or _default_name(model, adapter)
        if not _NAME.match(name):
            raise ConfigError(
                f"--system {spec}: the name {name!r} must be letters, digits, '.', '_', '+' "
                "or '-' (it names a folder); give one as NAME=..."
            )
        if any(s.name == name for s in systems):
            raise ConfigError(f"--system {spec}: two systems are named {name!r}; use NAME=...")
        trained = info.get("quantization", "nf4")
        systems.append(System(name, model, adapter, family.name, quantization or trained))
    return systems


def _evaluation(config: CompareConfig, system: System, out_dir: Path) -> EvaluateConfig:
    folder = out_dir / SYSTEMS / system.name
    return EvaluateConfig(
        manifest=config.manifest,
        out_dir=folder,
        model=system.model,
        adapter=system.adapter,
        quantization=system.quantization,
        dtype=config.dtype,
        device=config.device,
        decode=config.decode,
        limit=config.limit,
        resume=(folder / "predictions.jsonl").exists() and not config.overwrite,
        overwrite=config.overwrite,
        terms=config.terms,
        bootstrap=config.bootstrap,
        seed=config.seed,
        normalize=config.normalize,
        report=config.report,
    )


def compare(config: CompareConfig) -> CompareResult:
    """Evaluate every system on `config.manifest` and compare them; see CompareConfig."""
    systems = resolve_systems(config.systems, config.quantization)
    evaluations = [_evaluation(config, s, Path(config.out_dir)) for s in systems]
    for evaluation in evaluations:  # adapter bases and what each family can do, first
        evaluation.check_adapter_base()
    claim = claim_outputs(
        "compare",
        config.out_dir,
        names=OUTPUTS,
        inputs=[config.manifest, config.terms],
        # never inside an adapter or a model folder of a system
        trees=[path for s in systems for path in (s.adapter, s.model) if Path(path or "").is_dir()],
    )
    with claim:
        return _compare(config, claim.folder, systems)


def _compare(config: CompareConfig, out_dir: Path, systems: list[System]) -> CompareResult:
    utterances = read_references(config.manifest, config.limit)
    rows, metrics, usage, decoded = {}, {}, {}, {}
    for index, system in enumerate(systems, 1):
        log.info("system %d/%d: %s", index, len(systems), system.name)
        evaluation = _evaluation(config, system, out_dir)
        (out_dir / SYSTEMS).mkdir(exist_ok=True)
        try:
            result = run_evaluation(evaluation, evaluation.out_dir)
        except ConfigError as exc:  # an earlier run of this system with other options
            raise ConfigError(
                f"system {system.name}: {exc} (compare: --overwrite decodes every system again)"
            ) from None
        _release_memory()
        decoded[system.name] = result.decoded
        usage[system.name] = _usage(evaluation.out_dir, result.usage)
        metrics[system.name] = result.metrics
        rows[system.name] = result.rows  # scored under config.normalize already
    table = sorted(
        (_row(s, metrics[s.name], usage[s.name]) for s in systems),
        key=lambda r: (r["cer"] is None, r["cer"] if r["cer"] is not None else 0.0),
    )
    best = table[0]["name"]
    for row in table[1:]:
        row["versus_best"] = _difference(rows[best], rows[row["name"]], config)
    verdicts = [_verdict(best, row) for row in table[1:]]
    summary = {
        "manifest": str(config.manifest),
        "utterances": len(utterances),
        "scoring_policy": config.normalize,
        "best": best,
        "systems": table,
        "verdicts": verdicts,
    }
    compare_json = out_dir / "compare.json"
    with atomic_write(compare_json) as handle:
        json.dump(summary, handle, indent=2, ensure_ascii=False)
    report = None
    if config.report:
        from voxadapt.report_html import write_compare_report

        report = write_compare_report(out_dir / "report.html", summary)
    save_config(config, out_dir / "compare_config.yaml")
    return CompareResult(table, verdicts, compare_json, report, decoded)


def _release_memory() -> None:
    """One model in memory at a time: the last system's is gone before the next loads."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _usage(folder: Path, usage: DecodeUsage | None) -> dict[str, Any] | None:
    """This run's decoding cost, saved beside the system's outputs; a resumed run that
    decoded nothing reports the earlier run's."""
    path = folder / USAGE
    if usage is not None:
        record = {**asdict(usage), "rtf": usage.rtf}
        with atomic_write(path) as handle:
            json.dump(record, handle, indent=2)
        return record
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _row(system: System, metrics: dict[str, Any], usage: dict[str, Any] | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": system.name,
        "family": system.family,
        "model": system.model,
        "adapter": str(system.adapter) if system.adapter else None,
        "quantization": system.quantization,
        "utterances": metrics.get("utterances"),
    }
    for key in HEADLINE:
        row[key] = metrics.get(key)
        row[f"{key}_ci95"] = metrics.get(f"{key}_ci95")
    recall = metrics.get("term_recall")
    if recall:
        row["term_recall"] = recall.get("recall")
        row["term_recall_ci95"] = recall.get("ci95")
    usage = usage or {}
    row["rtf"] = usage.get("rtf")
    row["weights_gib"] = usage.get("weights_gib")
    row["peak_gib"] = usage.get("peak_gib")
    row["device"] = usage.get("device")
    return row


def _difference(
    best: list[dict[str, Any]], other: list[dict[str, Any]], config: CompareConfig
) -> dict[str, Any]:
    """CER(other) - CER(best) on their shared utterances, speaker-paired: positive means the
    best is better by that many (fractions; points for people)."""
    try:
        paired = paired_bootstrap(other, best, resamples=max(config.bootstrap, 1), seed=config.seed)
    except ValueError as exc:  # nothing shared to compare (references empty once normalized)
        return {"difference": None, "reason": str(exc)}
    result = {"utterances": paired["utterances"], "difference": paired["delta"]}
    if "ci" in paired and config.bootstrap:
        result["ci95"] = paired["ci"]
        result["p_value"] = paired["p_value"]
    if "too_few_speakers" in paired:
        result["too_few_speakers"] = paired["too_few_speakers"]
    return result


def _verdict(best: str, row: dict[str, Any]) -> str:
    """One plain sentence about the best system against another."""
    versus = row["versus_best"]
    if versus["difference"] is None:
        return f"{best} and {row['name']} cannot be compared: {versus['reason']}"
    size = f"{100 * abs(versus['difference']):.2f} points"
    if versus["difference"] == 0 and "ci95" not in versus:
        return f"{best} and {row['name']} have the same CER ({percent(row['cer'])})"
    if "ci95" not in versus:
        why = (
            f"fewer than {MIN_INTERVAL_SPEAKERS} speakers ({versus['too_few_speakers']}): "
            "no interval"
            if "too_few_speakers" in versus
            else "no bootstrap"
        )
        return f"{best} has {size} lower CER than {row['name']} ({why})"
    low, high = (100 * bound for bound in versus["ci95"])
    interval = f"[{low:.2f}, {high:.2f}]"
    if low > 0:
        return (
            f"{best} is better than {row['name']} by {size} {interval} "
            f"({p_value(versus['p_value'])})"
        )
    return (
        f"{best} and {row['name']} do not differ clearly: {size} {interval} "
        f"({p_value(versus['p_value'])}); CER {percent(row['cer'])}"
    )
