"""The `voxadapt` console script: one subcommand per stage, argument parsing only."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxadapt import __version__
from voxadapt.errors import StageInterrupted, VoxadaptError

log = logging.getLogger("voxadapt")

MAIN_EPILOG = """\
examples:
  voxadapt demo --out runs/demo
  voxadapt prepare aihub /data/208 --out data/ko-med --valid-size 0.05 --test-size 0.05
  voxadapt cache data/ko-med/*.jsonl --model mistralai/Voxtral-Mini-3B-2507 --out cache/ko-med
  voxadapt train --config configs/ko-medical-qlora.yaml --cache cache/ko-med \\
      --train data/ko-med/train.jsonl --valid data/ko-med/valid.jsonl
  voxadapt evaluate data/ko-med/test.jsonl --adapter runs/ko-med/adapter --out runs/eval
  voxadapt export --adapter runs/ko-med/adapter --out models/ko-med --format mistral
  voxadapt compare data/ko-med/test.jsonl --out runs/which-base \
      --system mistralai/Voxtral-Mini-3B-2507 --system Qwen/Qwen3-ASR-1.7B-hf
  voxadapt COMMAND --help

model families (--model, any stage): Voxtral (mistralai/Voxtral-Mini-3B-2507,
Voxtral-Small-24B-2507; does not list Korean) and Qwen3-ASR (Qwen/Qwen3-ASR-0.6B-hf,
Qwen/Qwen3-ASR-1.7B-hf; lists Korean). Measure which suits your data: voxadapt compare.
"""

CACHE_EPILOG = """\
The cache holds log-mel frames that touch real audio (compact codec or fp16) plus one padding
value per clip, in safetensors shards; `voxadapt train --cache DIR` rebuilds the model's inputs
(Voxtral's 30 s chunks, Qwen3-ASR's frames and mask) within 1e-3 of its processor's. The
features are the model family's: a cache is read only by models of the same front end.
Re-running computes only new or changed clips; killing it never corrupts the cache.

examples:
  voxadapt cache data/ko-med/train.jsonl data/ko-med/valid.jsonl \\
      --model mistralai/Voxtral-Mini-3B-2507 --out cache/ko-med --jobs 16
  voxadapt cache data/ko-med/train.jsonl data/ko-med/valid.jsonl \
      --model Qwen/Qwen3-ASR-1.7B-hf --out cache/ko-med-qwen
"""

TRANSCRIBE_EPILOG = """\
Clips are grouped by 30 s chunk count and sorted by length, decoded greedily in batches with
a KV cache. Files longer than 30 s are split at pauses (voice-activity detection) and their
segments decoded in batches: SRT/VTT get one cue per segment with real times (--no-vad: one
pass). The LLM quantization defaults to what the adapter was trained with. Each output
record flags repetition loops and transcripts cut by the max-new-tokens cap; a leaked
`lang:xx` prefix is removed. Unreadable inputs are reported per file; the rest still run.

formats (--format, several separated by commas, or all; one decode writes them all):
  jsonl  one file: a JSON record per input, every field and flag
  txt    one file: id<TAB>text lines (what `voxadapt score` reads back)
  text   one file per input: the transcript alone, a line per segment (whisper's txt)
  srt    one file per input: SubRip subtitles, a cue per segment with real times
  vtt    one file per input: WebVTT subtitles, the same cues
--out: jsonl or txt alone -> that file; text/srt/vtt alone -> a folder of <clip>.txt/.srt/.vtt,
or exactly FILE.txt/.srt/.vtt for one input; several formats -> a folder with
transcripts.jsonl and/or transcripts.txt (as asked) and the per-input files. No --out:
standard output (id<TAB>text lines; --format text: the transcripts alone). Nothing voxadapt
did not write is replaced, and the files of a run appear together at its end.

examples:
  voxadapt transcribe call.wav --adapter runs/ko-med/adapter            # path<TAB>text
  voxadapt transcribe call.wav --adapter runs/ko-med/adapter --format text
  voxadapt transcribe recordings/ --adapter runs/ko-med/adapter --out out.jsonl --batch-size 32
  voxadapt transcribe data/ko-med/test.jsonl --out subs/ --format srt
  voxadapt transcribe consult.wav --out consult.srt --max-line-width 20 --max-line-count 2
  voxadapt transcribe consult.wav --out subs/ --format all \\
      --bias-terms configs/ko-medical-terms.txt --bias-weight 2
  voxadapt transcribe clip.flac --model mistralai/Voxtral-Mini-3B-2507 --language auto
"""

EVALUATE_EPILOG = """\
Outputs in --out: predictions.jsonl (one row per utterance, written as batches finish),
metrics.json, report.html, evaluate_config.yaml. After a crash or Ctrl-C, the same command
with --resume decodes only what is missing. Metrics are defined in the README.

examples:
  voxadapt evaluate data/ko-med/test.jsonl --out runs/eval-base          # zero-shot baseline
  voxadapt evaluate data/ko-med/test.jsonl --adapter runs/ko-med/adapter --out runs/eval \\
      --terms configs/ko-medical-terms.txt --compare runs/eval-base/predictions.jsonl
  voxadapt evaluate data/ko-med/test.jsonl --adapter runs/ko-med/adapter --out runs/eval --resume
"""

COMPARE_EPILOG = """\
Each --system is a hub id, a model folder or an adapter folder (which implies its base), with
an optional NAME= prefix; any mix of families (Voxtral, Qwen3-ASR). Outputs in --out:
compare.json, report.html, compare_config.yaml and systems/NAME/ (each system's evaluate
outputs). Run the same command again to resume: systems already decoded are not decoded again.

examples:
  voxadapt compare data/ko-med/test.jsonl --out runs/which-base \
      --system mistralai/Voxtral-Mini-3B-2507 --system Qwen/Qwen3-ASR-1.7B-hf
  voxadapt compare data/ko-med/test.jsonl --out runs/which-adapter --normalize numbers \
      --system base=Qwen/Qwen3-ASR-1.7B-hf --system tuned=runs/ko-med-qwen/adapter \
      --terms configs/ko-medical-terms.txt
"""

SCORE_EPILOG = """\
HYPOTHESES: a predictions.jsonl (evaluate), the JSONL of transcribe (id + text), any JSONL with
id and text or hypothesis, or a Kaldi-style text file (`id transcript` per line). Manifest rows
without a hypothesis are scored as empty output and counted (missing_hypotheses); hypotheses
with ids the manifest lacks are counted and listed, not scored.

examples:
  voxadapt score data/ko-med/test.jsonl vendor.jsonl --out runs/score-vendor
  voxadapt score data/ko-med/test.jsonl whisper_text --out runs/score-whisper \\
      --compare runs/eval/predictions.jsonl --terms configs/ko-medical-terms.txt
"""

EXPORT_EPILOG = """\
formats:
  hf       every part the adapter trained (projector, LLM, encoder) merged in; a complete
           transformers checkpoint with the processor and tokenizer
           (AutoModelForMultimodalLM / the family's class .from_pretrained(OUT))
  mistral  (Voxtral only) consolidated.safetensors + params.json + tekken.json, the layout
           vLLM serves:
           vllm serve OUT --tokenizer-mode mistral --config-format mistral --load-format mistral

examples:
  voxadapt export --adapter runs/ko-med/adapter --out models/ko-med-hf
  voxadapt export --adapter runs/ko-med/adapter --out models/ko-med-vllm --format mistral
"""

SERVE_EPILOG = """\
POST /v1/audio/transcriptions takes OpenAI's fields (file, model, language, prompt,
response_format json|text|srt|vtt|verbose_json, temperature 0, timestamp_granularities[]
segment) plus hotwords ("고혈압,CT|씨티": added to --bias-terms for that request) and
bias_weight. Also GET /v1/models, /health (503 until the model answers), /metrics
(Prometheus) and / (a page to try it). Binds 127.0.0.1 unless --host says otherwise.

examples:
  voxadapt serve --adapter runs/ko-med/adapter
  voxadapt serve --adapter runs/ko-med/adapter --bias-terms configs/ko-medical-terms.txt \\
      --api-key-file ~/.voxadapt-key --host 0.0.0.0 --port 8000
  curl http://127.0.0.1:8000/v1/audio/transcriptions -F model=adapter -F file=@call.wav
"""

TRAIN_EPILOG = """\
By default only the audio->LLM projector trains; --train-modules projector,llm adds LoRA on
the language model, projector,llm,encoder also on the audio encoder, llm the language model
alone (everything else frozen; the parameter audit refuses anything else). The LLM is quantized
(nf4 by default, also on CPU via bitsandbytes), the audio tower, projector and LM head are not;
LoRA on the LLM trains on its 4-bit layers (QLoRA). Each evaluation transcribes the
valid set (greedy, KV cache) and keeps the adapter with the lowest CER in OUTPUT_DIR/adapter.
Ctrl-C saves OUTPUT_DIR/checkpoint-last; --resume continues from it.
Multi-GPU: torchrun --nproc_per_node=4 -m voxadapt.cli train ...  (or accelerate launch)

examples:
  voxadapt train --config configs/ko-medical-qlora.yaml --train data/train.jsonl \\
      --valid data/valid.jsonl --cache cache/ko-med --output-dir runs/ko-med
  voxadapt train --model mistralai/Voxtral-Mini-3B-2507 --train data/train.jsonl \\
      --projector full --quantization none --dtype bf16 --max-steps 2000 --eval-steps 250
  voxadapt train --config configs/ablation/projector-llm.yaml --train data/train.jsonl \\
      --valid data/valid.jsonl --cache cache/ko-med
  voxadapt train --config runs/ko-med/config.yaml --resume
  voxadapt train --config configs/ko-medical-qlora.yaml --model Qwen/Qwen3-ASR-1.7B-hf \
      --train data/train.jsonl --valid data/valid.jsonl --output-dir runs/ko-med-qwen
"""

PREPARE_EPILOG = """\
formats:
  scp     lines 'path|transcript' (paths relative to the SCP file's folder)
  aihub   AI-Hub label tree: .../{간호사,의사,환자}/<speaker>/<utt>.json beside <utt>.wav,
          or parallel 라벨링데이터/원천데이터 trees matched by file stem
  kaldi   data dir with wav.scp and text (utt2spk, segments optional)
  jsonl   JSON lines: audio/audio_path/audio_filepath, text/transcript,
          optional duration, speaker, language, offset (other fields are kept as metadata)
  nemo    a NeMo ASR manifest (audio_filepath, duration, text, offset)
  lhotse  a Lhotse CutSet, or supervisions + recordings manifests (file or folder)
  hf      a Hugging Face dataset: parquet file/folder, save_to_disk folder, audiofolder

outputs in --out:
  train.jsonl [valid.jsonl test.jsonl]  one utterance per line (id, audio, text, duration...)
  rejected.jsonl                        every dropped input item with its reason and origin
  stats.json, durations.png             counts, hours, distributions, rejections; duration histogram
  prepare_config.yaml                   the resolved options (reusable with --config)

examples:
  voxadapt prepare scp dataset/train.scp --out data/seed
  voxadapt prepare aihub /data/208 --out data/ko-med --valid-size 0.05 --test-size 0.05
  voxadapt prepare kaldi data/train --out data/kaldi --text-mode phonetic --drop-fillers
  voxadapt prepare scp train.scp --out data/scp --speaker-from parent --test-size 0.05
  voxadapt prepare nemo manifest.json --out data/nemo --emit nemo
  voxadapt prepare jsonl clips.jsonl --out data/j --min-duration 1 --max-duration 30 --jobs 16
"""


@dataclass(frozen=True)
class Command:
    """A subcommand: where its config dataclass and stage function live, its help texts, and
    how its result is summarized (returning the exit code)."""

    name: str
    module: str  # voxadapt.stages.<module> holds the config class and the stage function
    config: str
    function: str
    help: str
    description: str
    epilog: str
    summary: Callable[[Any], int]


def _prepare_summary(result: Any) -> int:
    from voxadapt.report import format_prepare_summary, format_table
    from voxadapt.units import percent

    stats = result.stats
    print(format_prepare_summary(stats))
    field = next((key for key in stats["splits"]["train"] if key.startswith("by_")), None)
    if field:  # --stratify: that field's counts per split
        values = sorted({value for split in stats["splits"].values() for value in split[field]})
        rows = [
            (split, *(str(counts[field].get(value, 0)) for value in values))
            for split, counts in stats["splits"].items()
        ]
        print("\n" + format_table(rows, (f"split by {field[3:]}", *values)))
    if stats["rejected"]:
        share = stats["rejected"] / stats["input_items"]
        print(f"\nrejected {stats['rejected']} of {stats['input_items']} ({percent(share)})")
    print(f"\nmanifests: {', '.join(str(p) for p in result.manifests.values())}")
    if result.emitted:
        print(f"emitted:   {', '.join(str(p) for p in result.emitted)}")
    print(f"rejected:  {result.rejected_path}")
    print(f"stats:     {result.stats_path}  plot: {result.plot_path}")
    return 0


def _cache_summary(result: Any) -> int:
    print(
        f"cache: {result.out_dir}\n  utterances {result.utterances}, computed "
        f"{result.computed}, already cached {result.reused}, failed {result.failed}\n"
        f"  {result.bytes_on_disk / 1e6:.1f} MB on disk "
        f"({result.bytes_per_utterance / 1e3:.0f} kB per entry), {result.seconds:.1f} s"
    )
    if result.speeds != (1.0,):
        factors = ", ".join(f"{speed:g}x" for speed in result.speeds)
        print(f"  speed perturbation: {factors} (one entry per clip and factor)")
    if result.corrupt_shards:
        print(f"  {result.corrupt_shards} corrupt shards were removed and their clips recomputed")
    if result.failed:
        print(f"  failures are listed in {result.out_dir / 'cache_errors.jsonl'}")
    return 0 if result.failed < result.utterances else 1


def _train_summary(result: Any) -> int:
    from voxadapt.units import percent

    if int(os.environ.get("RANK", "0")) == 0:
        state = result.state
        best = (
            f"best eval CER {percent(state.best_cer)} at step {state.best_step}"
            if state.best_cer is not None
            else "no validation set: adapter = last step"
        )
        print(
            f"trained {state.step} steps; {best}\nadapter: {result.adapter_dir}\n"
            f"logs: {result.output_dir / 'tensorboard'} (tensorboard --logdir ...)"
        )
    return 0


def _demo_summary(result: Any) -> int:
    return 0


def _transcribe_summary(result: Any) -> int:
    done = len(result.rows) - result.n_errors
    loops = sum(1 for row in result.rows if row.get("repetition_loop"))
    summary = f"transcribed {done} of {len(result.rows)} inputs"
    if result.n_errors:
        summary += f"; {result.n_errors} failed (see warnings)"
    if loops:
        summary += f"; {loops} with repetition loops"
    if result.output is not None:
        summary += f" -> {result.output}"
    print(summary, file=sys.stderr)
    return 0 if done else 1


def _evaluate_summary(result: Any) -> int:
    from voxadapt.report import format_metrics_summary

    print(format_metrics_summary(result.metrics))
    print(
        f"\npredictions: {result.predictions} ({result.decoded} decoded now)\n"
        f"metrics:     {result.metrics_path}"
        + (f"\nreport:      {result.report}" if result.report else "")
    )
    if result.failed:
        print(f"{len(result.failed)} utterances failed to load: see failed.jsonl")
    return 0


def _compare_summary(result: Any) -> int:
    from voxadapt.report import compare_table_rows, format_table

    summary = json.loads(result.compare_json.read_text(encoding="utf-8"))
    header, rows = compare_table_rows(summary)
    print(format_table([tuple(row) for row in rows], tuple(header)))
    print()
    for verdict in result.verdicts:
        print(verdict)
    decoded = ", ".join(f"{name} {count}" for name, count in result.decoded.items())
    report = f"\nreport:  {result.report}" if result.report else ""
    print(f"\ndecoded now: {decoded}\ncompare: {result.compare_json}{report}")
    return 0


def _score_summary(result: Any) -> int:
    from voxadapt.report import format_metrics_summary

    print(format_metrics_summary(result.metrics))
    if result.missing:
        print(f"\n{len(result.missing)} utterances had no hypothesis (scored as empty output)")
    if result.unknown:
        print(f"{len(result.unknown)} hypotheses had ids not in the manifest (not scored)")
    report = f"\nreport:      {result.report}" if result.report else ""
    print(f"\npredictions: {result.predictions}\nmetrics:     {result.metrics_path}{report}")
    return 0


def _doctor_summary(result: Any) -> int:
    import json

    from voxadapt.report import format_table

    if getattr(result, "as_json", False):
        for check in result.checks:
            print(json.dumps(check.__dict__, ensure_ascii=False))
    else:
        rows = [(check.name, check.state, check.detail) for check in result.checks]
        print(format_table(rows, ("check", "state", "detail / what to do")))
        if result.failed:
            print(f"\n{len(result.failed)} problem(s) to fix before training: see FAIL above")
    return 1 if result.failed else 0


def _serve_summary(result: Any) -> int:
    print(f"voxadapt serve: stopped ({result.url})", file=sys.stderr)
    return 0


def _redact_summary(result: Any) -> int:
    from voxadapt.redact import TAGS
    from voxadapt.report import format_table

    rows = [(key, TAGS[key], str(count)) for key, count in result.counts.items()]
    print(format_table(rows or [("-", "-", "0")], ("type", "tag", "removed")))
    if result.evaluation:
        scores = result.evaluation["by_type"]
        shown = [
            (kind, *(f"{v:.3f}" if v is not None else "-" for v in (s["recall"], s["precision"])))
            for kind, s in scores.items()
        ]
        print("\n" + format_table(shown, ("gold type", "recall", "precision")))
    if result.audio_written or result.audio_untimed:
        print(f"\naudio: {len(result.audio_written)} recordings silenced in {result.out_dir}/audio")
    if result.audio_untimed:
        shown = ", ".join(result.audio_untimed[:5]) + (
            " ..." if len(result.audio_untimed) > 5 else ""
        )
        print(f"NOT redacted (no word times; run transcribe --aligner): {shown}")
    print(f"\nredacted:   {', '.join(str(p) for p in result.outputs) or '-'}")
    print(f"redactions: {result.records}\nsummary:    {result.summary}")
    return 0


def _export_summary(result: Any) -> int:
    print(f"exported ({result.format}) to {result.out_dir}:")
    for path in result.files:
        print(f"  {path.name}  {path.stat().st_size / 1e6:.1f} MB")
    if result.format == "mistral":
        print(
            f"serve: vllm serve {result.out_dir} --tokenizer-mode mistral "
            "--config-format mistral --load-format mistral"
        )
    return 0


REDACT_EPILOG = """\
Removed (tag): resident and foreigner registration numbers, phone numbers, names, addresses,
e-mail, bank account, card, health-insurance, patient/chart, passport and driver's licence
numbers, dates of birth, and long numbers no rule names ([식별번호]), in digits and as spoken
("공일공 일이삼사 오육칠팔", "팔오공삼일이 다시 일이삼..."). Kept: doses, vitals, durations,
relative dates, ages, counts, drug and disease names. Outputs in --out: each input under its
own name and format (times unchanged), redactions.jsonl (id, field, type, start, end,
detector: never the text), redact_summary.json, redact_config.yaml; --gold adds
redact_eval.json, --audio the folder audio/. Redaction supports a privacy review; it does
not replace one.

examples:
  voxadapt redact runs/eval/predictions.jsonl subs/consult.srt --out deid/
  voxadapt transcribe consult.wav --out out.jsonl --redact
  voxadapt redact out.jsonl --out deid/ --audio        # rows with words from --aligner
  cat notes.txt | voxadapt redact - --out deid/ --keep-types birth_date --tag '***'
  voxadapt redact --gold my_labelled.jsonl --out deid-eval/
"""

COMMANDS = (
    Command(
        "demo",
        "demo",
        "DemoConfig",
        "run_demo",
        "run the whole pipeline on a tiny random model (offline, CPU)",
        "Build a tiny random Voxtral (or Qwen3-ASR: --family qwen3_asr), prepare the bundled "
        "Korean sample clips, cache features, train the projector for a few dozen steps and "
        "evaluate. It proves the pipeline works on this machine; a random model does not "
        "transcribe. Real results: run the stages (prepare, cache, train, evaluate) with a real "
        "base on a GPU, as in the README's tour.",
        "examples:\n  voxadapt demo --out runs/demo\n"
        "  voxadapt demo --out runs/demo-qwen --family qwen3_asr",
        _demo_summary,
    ),
    Command(
        "prepare",
        "prepare",
        "PrepareConfig",
        "prepare",
        "build clean train/valid/test manifests from a speech dataset",
        "Read a speech dataset, normalize Korean transcripts, validate audio, filter by "
        "duration, split by speaker, and write manifests. Every input item is either kept or "
        "listed in rejected.jsonl with its reason.",
        PREPARE_EPILOG,
        _prepare_summary,
    ),
    Command(
        "cache",
        "cache",
        "CacheConfig",
        "build_cache",
        "compute exact, compact log-mel features for manifests",
        "Featurize every utterance of the manifests with the model's processor settings into "
        "a sharded feature store.",
        CACHE_EPILOG,
        _cache_summary,
    ),
    Command(
        "train",
        "train",
        "TrainConfig",
        "train",
        "train a speech LLM's audio projector (LoRA or full; optionally LLM/encoder LoRA)",
        "Fine-tune the projector of a Voxtral or Qwen3-ASR base (the default; --train-modules "
        "adds LoRA on the LLM and the encoder) with a quantized LLM, evaluation by CER during "
        "training, best-checkpoint selection, TensorBoard logs and resumable checkpoints. "
        "Options may come from --config FILE.yaml; flags override it.",
        TRAIN_EPILOG,
        _train_summary,
    ),
    Command(
        "transcribe",
        "transcribe",
        "TranscribeConfig",
        "transcribe",
        "transcribe audio files, folders or manifests",
        "Batched greedy transcription with a Voxtral or Qwen3-ASR base (optionally with a trained "
        "adapter).",
        TRANSCRIBE_EPILOG,
        _transcribe_summary,
    ),
    Command(
        "evaluate",
        "evaluate",
        "EvaluateConfig",
        "evaluate",
        "transcribe a manifest and score it (CER, WER, sWER, CIs, report.html)",
        "Evaluate a base model or an adapter on a manifest with references.",
        EVALUATE_EPILOG,
        _evaluate_summary,
    ),
    Command(
        "compare",
        "compare",
        "CompareConfig",
        "compare",
        "evaluate several bases/adapters on one manifest and pick the best",
        "Evaluate each --system (Voxtral or Qwen3-ASR base, or an adapter) on the same "
        "manifest, one model in memory at a time, and compare them: CER, multi-reference CER, "
        "WER and term recall with 95% CIs, real-time factor and memory, and each system's "
        "paired difference against the best.",
        COMPARE_EPILOG,
        _compare_summary,
    ),
    Command(
        "score",
        "score",
        "ScoreConfig",
        "score",
        "score any system's hypotheses against a manifest (no model needed)",
        "Score hypotheses from evaluate/transcribe, a vendor API or another toolkit against "
        "a manifest's references: the same predictions.jsonl, metrics.json and report.html "
        "as evaluate.",
        SCORE_EPILOG,
        _score_summary,
    ),
    Command(
        "export",
        "export",
        "ExportConfig",
        "export",
        "merge the adapter into a servable checkpoint (transformers or Mistral/vLLM)",
        "Merge a trained projector adapter into the base model and save it.",
        EXPORT_EPILOG,
        _export_summary,
    ),
    Command(
        "doctor",
        "doctor",
        "DoctorConfig",
        "doctor",
        "check this machine: Python, torch/CUDA, GPU memory, 4-bit, extras, fonts, disk",
        "Check that this machine can run voxadapt: Python, torch and CUDA, GPU memory and "
        "bf16, bitsandbytes NF4 (by running a 4-bit layer), flash-attention, the installed "
        "extras, the Korean font plots use, PyAV's audio decoders and free disk space. One "
        "line per check: ok, or what to do. Exits 1 when something required fails.",
        "examples:\n  voxadapt doctor\n  voxadapt doctor --path /scratch/runs --json",
        _doctor_summary,
    ),
    Command(
        "redact",
        "redact",
        "RedactConfig",
        "redact",
        "remove identifiers (names, numbers, addresses...) from transcripts and recordings",
        "De-identify Korean transcripts: every identifier, written or spoken, is replaced by a "
        "typed tag ([전화번호], [이름]...); subtitles and segments keep their times.",
        REDACT_EPILOG,
        _redact_summary,
    ),
    Command(
        "serve",
        "serve",
        "ServeConfig",
        "serve",
        "serve an adapter behind an OpenAI-compatible transcription API",
        "Load the base (with a trained adapter) once and answer OpenAI-style transcription "
        "requests with dynamic batching, term biasing, long-form segments with real times, "
        "and a page to try it in a browser.",
        SERVE_EPILOG,
        _serve_summary,
    ),
)


def _config_class(command: Command) -> type:
    return getattr(importlib.import_module(f"voxadapt.stages.{command.module}"), command.config)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to render --help in tests)."""
    from voxadapt.config import add_config_arguments

    parser = argparse.ArgumentParser(
        prog="voxadapt",
        description="Adapt a speech LLM (Mistral's Voxtral or Qwen3-ASR) to Korean (medical) "
        "speech: prepare data, train the audio projector with LoRA, transcribe, score and "
        "compare bases.",
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # --min-dur is a typo, not --min-duration
    )
    parser.add_argument("--version", action="version", version=f"voxadapt {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more logging (-v: debug messages and library progress, -vv: library logs)",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for command in COMMANDS:
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            epilog=command.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
        sub.add_argument(
            "--config",
            type=Path,
            metavar="FILE.yaml",
            help="YAML with these options; flags "
            "override it (nested sections such as decode: as in configs/)",
        )
        add_config_arguments(sub, _config_class(command))
        sub.set_defaults(command=command, subparser=sub)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse; an unknown option is reported with the subcommand's usage and the closest
    option it has (`voxadapt train --lerning-rate` names train's usage and `--lr`...)."""
    import difflib

    words = sys.argv[1:] if argv is None else list(argv)
    names = [command.name for command in COMMANDS]
    first = next((word for word in words if not word.startswith("-")), None)
    if first is not None and first not in names:
        close = difflib.get_close_matches(first, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        parser.error(f"unknown command {first!r}{hint}; commands: {', '.join(names)}")
    args, extras = parser.parse_known_args(argv)
    if extras:
        target = getattr(args, "subparser", parser)
        options = [flag for action in target._actions for flag in action.option_strings]
        unknown = next((extra for extra in extras if extra.startswith("-")), extras[0])
        close = difflib.get_close_matches(unknown.split("=", 1)[0], options, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        target.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
    return args


def _run(command: Command, args: argparse.Namespace) -> int:
    from voxadapt.config import build_config, config_overrides

    cls = _config_class(command)
    config = build_config(cls, args.config, **config_overrides(args, cls))
    stage = getattr(importlib.import_module(f"voxadapt.stages.{command.module}"), command.function)
    return command.summary(stage(config))


def _quiet_libraries(verbose: int) -> None:
    """Library progress bars and warnings only with -v: they drown our own output."""
    import warnings

    if verbose:
        return
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="(peft|transformers|torch)")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


def _one_line(exc: BaseException) -> str:
    """The user-facing message; an error re-raised from a DataLoader worker carries the
    worker's traceback in its message, of which only the last line is the message."""
    message = str(exc)
    if "Original Traceback" in message:
        last = [line for line in message.splitlines() if line.strip()][-1]
        message = last.split(": ", 1)[-1] if last.split(":", 1)[0].endswith("Error") else last
    return " ".join(message.split("\n"))


# Set by a stop signal (SIGTERM, SIGINT): an error that surfaces after it is the stop, seen
# through a library that swallowed the KeyboardInterrupt (soundfile's I/O callbacks turn it
# into an AssertionError), not a bug to show as a traceback.
_STOP_SIGNALLED = threading.Event()


def _stop_signal(signum: int, frame: Any) -> None:
    _STOP_SIGNALLED.set()
    raise KeyboardInterrupt


def _unraisable(unraisable: Any) -> None:
    """The interrupt a C callback swallowed is reported by the exit line, not a traceback."""
    if _STOP_SIGNALLED.is_set() and isinstance(unraisable.exc_value, KeyboardInterrupt):
        return
    sys.__unraisablehook__(unraisable)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """SIGTERM (docker stop, SLURM preemption) and SIGINT (Ctrl-C) stop the run alike."""
    _STOP_SIGNALLED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _stop_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous_hook, sys.unraisablehook = sys.unraisablehook, _unraisable
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _exit_code(exc: BaseException) -> int | None:
    """Print the one line for an exception that ends a run, and return the exit code;
    None for a bug (the caller re-raises it, traceback and all)."""
    if isinstance(exc, StageInterrupted):  # train saved a checkpoint: say where, exit as ^C
        print(f"voxadapt: {exc}", file=sys.stderr)
        return 130
    if isinstance(exc, KeyboardInterrupt) or _STOP_SIGNALLED.is_set():
        print("voxadapt: interrupted", file=sys.stderr)
        return 130
    if isinstance(exc, VoxadaptError):
        print(f"voxadapt: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    if isinstance(exc, OSError):  # the machine, not the code: a full disk, a vanished mount
        where = f": {exc.filename}" if exc.filename else ""
        print(f"voxadapt: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `voxadapt` console script."""
    for stream in (sys.stdout, sys.stderr):  # Korean in a latin-1 locale: escaped, not a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:  # stop signals count from the first moment: importing torch takes seconds
        with stop_signals():
            code = _main(argv)
            if _STOP_SIGNALLED.is_set():  # a library swallowed the stop and the run went on
                return _exit_code(KeyboardInterrupt())
            return code
    except (Exception, KeyboardInterrupt) as exc:
        code = _exit_code(exc)
        if code is None:
            raise
        return code


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    if not hasattr(args, "command"):
        parser.print_help()
        return 2
    # Our own progress messages at INFO (DEBUG with -v); other libraries only warn (-vv: all).
    logging.basicConfig(
        level=(logging.ERROR, logging.WARNING, logging.DEBUG)[min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    from tqdm.contrib.logging import logging_redirect_tqdm

    # Warnings go through logging too, so that they, like log records, are written above a
    # progress bar (tqdm.write) instead of into it.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.WARNING)
    _quiet_libraries(args.verbose)
    try:
        with logging_redirect_tqdm():
            return _run(args.command, args)
    finally:
        logging.captureWarnings(False)


if __name__ == "__main__":
    sys.exit(main())
