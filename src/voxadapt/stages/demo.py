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
DEMO_OUTPUTS = (
    *(tiny_dir_name(name) for name in FAMILIES),
    "data",
    "cache",
    "eval-base",
    "run",
    "eval",
)

# How the demo trains: hard enough that the tiny random model starts to memorize the bundled
# clips within about a minute on two CPU cores, so the CER on them falls (a check that the
# loop learns, not a recipe: real runs use configs/). The whole projector and LoRA on the
# LLM, because a random LLM has to learn to emit the transcripts; a full-precision LLM,
# because at these widths NF4 only costs time; one batch of all four clips per step.
# A 64-wide model with a frozen random 131072-token head has logits within about +-1.3, so
# its loss cannot fall much below 10.5: it learns by moving the right token to the top. In
# 50 steps (~25 s) it learns to write a transcript, one clip's word-perfect, for every clip
# (CER ~80%); telling the clips apart through the random encoder takes longer than a demo
# (150 steps, the encoder trained too: the same).
MEMORIZATION = {
    "quantization": "none",
    "projector": "full",
    "train_modules": ["projector", "llm"],
    "batch_size": 4,
    "grad_accum": 1,
    "lr": 5e-3,
    "scheduler": "constant",
    "warmup_ratio": 0.0,
}
# Decoding of the tiny model: up to 6 tokens per second of audio (the transcripts need about
# 3; a random model writes up to the cap, so the cap bounds the time of the "before").
DEMO_DECODE = {"batch_size": 4, "tokens_per_s": 6.0, "num_workers": 0}


@dataclass
class DemoConfig(Config):
    """Options of `voxadapt demo`."""

    out: Path = option(Path("runs/demo"), help="where everything goes", metavar="DIR")
    steps: int = option(50, help="training steps")
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
        print(f"[1/6] building a tiny random {family.title} in {model_dir}", flush=True)
        family.build_tiny(model_dir)
    else:
        print(f"[1/6] reusing the tiny {family.title} in {model_dir}", flush=True)
    print("[2/6] preparing the bundled Korean sample clips", flush=True)
    prepared = prepare(PrepareConfig(sample_scp(), "scp", out_dir / "data", jobs=1))
    train_manifest = prepared.manifests["train"]
    print(
        f"      kept {prepared.stats['kept']}, rejected {prepared.stats['rejected']} "
        f"(see {prepared.rejected_path})",
        flush=True,
    )
    print("[3/6] caching features", flush=True)
    spec_file = out_dir / "cache" / "feature_spec.json"
    if spec_file.is_file() and json.loads(spec_file.read_text()).get("model") != str(model_dir):
        shutil.rmtree(out_dir / "cache")  # an earlier demo's features of another family
    cache = build_cache(CacheConfig([train_manifest], str(model_dir), out_dir / "cache", jobs=1))
    print(
        f"      {cache.computed} computed, {cache.reused} reused, "
        f"{cache.bytes_per_utterance / 1e3:.0f} kB per clip",
        flush=True,
    )
    decode = DecodeOptions(**DEMO_DECODE)
    print("[4/6] decoding the training clips with the untrained base (before)", flush=True)
    base = evaluate(
        EvaluateConfig(
            manifest=train_manifest,
            model=str(model_dir),
            quantization=MEMORIZATION["quantization"],
            out_dir=out_dir / "eval-base",
            decode=decode,
            overwrite=True,
            bootstrap=0,
            report=False,
        )
    )
    print(
        f"[5/6] training the projector and LoRA on the LLM for {steps} steps on these "
        "clips, so that the tiny model memorizes them",
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
        logging_steps=max(1, steps // 6),
        eval_steps=max(1, steps // 2),
        num_workers=0,
        decode=decode,
        **MEMORIZATION,
    )
    result = train(config)
    losses = [r["loss"] for r in result.state.log_history if "loss" in r]
    print(
        "[6/6] evaluating the adapter on the same clips: predictions, metrics, report.html",
        flush=True,
    )
    evaluation = evaluate(
        EvaluateConfig(
            manifest=train_manifest,
            model=str(model_dir),
            adapter=result.adapter_dir,
            out_dir=out_dir / "eval",
            decode=decode,
            overwrite=True,
            bootstrap=200,
            compare=base.predictions,
        )
    )
    elapsed = time.perf_counter() - started
    clips = evaluation.metrics["utterances"]
    print(
        f"\ndone in {elapsed:.0f} s. training loss {losses[0]:.3f} -> {losses[-1]:.3f}\n"
        f"memorization check on the {clips} training clips: CER "
        f"{percent(base.metrics['cer'])} -> {percent(evaluation.metrics['cer'])} "
        "(a tiny random model: this shows the loop learns, not accuracy)\n"
        "A tiny random model does not transcribe: it can only learn these clips by heart.\n"
        f"Real results: the README's tour with MODEL={family.default_model} on a GPU."
    )
    paths = {
        "model": model_dir,
        "manifests": out_dir / "data",
        "cache": out_dir / "cache",
        "base eval": out_dir / "eval-base",
        "run": result.output_dir,
        "adapter": result.adapter_dir,
        "report": evaluation.report,
    }
    for name, path in paths.items():
        print(f"  {name:<10} {path}")
    return paths
