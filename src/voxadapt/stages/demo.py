"""`voxadapt demo`: the whole pipeline on a tiny random model of a family (Voxtral by default,
or Qwen3-ASR), offline, on CPU."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from voxadapt.config import Config, option
from voxadapt.decoding import DecodeOptions
from voxadapt.families import FAMILIES, family_named
from voxadapt.outputs import claim_outputs
from voxadapt.stages.cache import CacheConfig, build_cache
from voxadapt.stages.evaluate import EvaluateConfig, evaluate
from voxadapt.stages.prepare import PrepareConfig, prepare
from voxadapt.stages.train import TrainConfig, train
from voxadapt.units import percent

log = logging.getLogger(__name__)


def sample_scp() -> Path:
    """The bundled SCP of Korean clinical sentences (espeak-ng speech, annotated transcripts)."""
    return Path(str(resources.files("voxadapt") / "samples" / "train.scp"))


def tiny_dir_name(family: str) -> str:
    """The folder of the demo's tiny model of `family` (tiny-voxtral, tiny-qwen3-asr)."""
    return "tiny-" + family.replace("_", "-")


# What the demo writes in --out, one folder per stage plus the tiny models.
DEMO_OUTPUTS = (*(tiny_dir_name(name) for name in FAMILIES), "data", "cache", "run", "eval")


@dataclass
class DemoConfig(Config):
    """Options of `voxadapt demo`."""

    out: Path = option(Path("runs/demo"), help="where everything goes", metavar="DIR")
    steps: int = option(30, help="training steps")
    family: str = option(
        "voxtral", help="which tiny random base to build and adapt", choices=tuple(FAMILIES)
    )

    def problems(self) -> list[str]:
        found = super().problems()
        if self.steps < 1:
            found.append("steps must be >= 1")
        return found


def run_demo(config: DemoConfig) -> dict[str, Path]:
    """Build the tiny model, prepare, cache, train and evaluate; print where things went."""
    claim = claim_outputs("demo", config.out, names=DEMO_OUTPUTS)
    with claim:
        return _run_demo(config, claim.folder)


def _run_demo(config: DemoConfig, out_dir: Path) -> dict[str, Path]:
    started, steps = time.perf_counter(), config.steps
    family = family_named(config.family)
    model_dir = out_dir / tiny_dir_name(family.name)
    if not (model_dir / "model.safetensors").is_file():
        print(f"[1/5] building a tiny random {family.title} in {model_dir}", flush=True)
        family.build_tiny(model_dir)
    else:
        print(f"[1/5] reusing the tiny {family.title} in {model_dir}", flush=True)
    print("[2/5] preparing the bundled Korean sample clips", flush=True)
    prepared = prepare(PrepareConfig(sample_scp(), "scp", out_dir / "data", jobs=1))
    train_manifest = prepared.manifests["train"]
    print(
        f"      kept {prepared.stats['kept']}, rejected {prepared.stats['rejected']} "
        f"(see {prepared.rejected_path})",
        flush=True,
    )
    print("[3/5] caching features", flush=True)
    spec_file = out_dir / "cache" / "feature_spec.json"
    if spec_file.is_file() and json.loads(spec_file.read_text()).get("model") != str(model_dir):
        shutil.rmtree(out_dir / "cache")  # an earlier demo's features of another family
    cache = build_cache(CacheConfig([train_manifest], str(model_dir), out_dir / "cache", jobs=1))
    print(
        f"      {cache.computed} computed, {cache.reused} reused, "
        f"{cache.bytes_per_utterance / 1e3:.0f} kB per clip",
        flush=True,
    )
    print(
        f"[4/5] training the projector with LoRA for {steps} steps (NF4 LLM), evaluating "
        "CER on the same clips",
        flush=True,
    )
    shutil.rmtree(out_dir / "run", ignore_errors=True)  # this demo's earlier run
    config = TrainConfig(
        model=str(model_dir),
        train=train_manifest,
        valid=train_manifest,
        cache=out_dir / "cache",
        output_dir=out_dir / "run",
        max_steps=steps,
        batch_size=4,
        grad_accum=1,
        lr=1e-2,
        logging_steps=5,
        eval_steps=max(1, steps // 2),
        warmup_ratio=0.0,
        num_workers=0,
        decode=DecodeOptions(batch_size=4, tokens_per_s=2.0, num_workers=0),
    )
    result = train(config)
    losses = [r["loss"] for r in result.state.log_history if "loss" in r]
    print("[5/5] evaluating the adapter: predictions, metrics, report.html", flush=True)
    evaluation = evaluate(
        EvaluateConfig(
            manifest=train_manifest,
            model=str(model_dir),
            adapter=result.adapter_dir,
            out_dir=out_dir / "eval",
            decode=DecodeOptions(batch_size=4, tokens_per_s=2.0, num_workers=0),
            overwrite=True,
            bootstrap=200,
        )
    )
    elapsed = time.perf_counter() - started
    print(
        f"\ndone in {elapsed:.0f} s. training loss {losses[0]:.3f} -> {losses[-1]:.3f}; "
        f"eval CER {percent(result.state.best_cer)} (best at step {result.state.best_step}); "
        f"evaluate: CER {percent(evaluation.metrics['cer'])}"
    )
    print(
        "A tiny random model does not transcribe: this run proves the pipeline, not accuracy.\n"
        f"Real results: the README's tour with MODEL={family.default_model} on a GPU."
    )
    paths = {
        "model": model_dir,
        "manifests": out_dir / "data",
        "cache": out_dir / "cache",
        "run": result.output_dir,
        "adapter": result.adapter_dir,
        "report": evaluation.report,
    }
    for name, path in paths.items():
        print(f"  {name:<10} {path}")
    return paths
