"""The `voxadapt` console script: one subcommand per stage, argument parsing only."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from voxadapt import __version__
from voxadapt.errors import VoxadaptError

log = logging.getLogger("voxadapt")

MAIN_EPILOG = """\
stages:
  demo        the whole pipeline on a tiny random Voxtral, offline, on CPU (< 1 min)
  prepare     SCP / AI-Hub tree / Kaldi dir / JSONL -> train/valid/test manifests
  cache       exact, compact log-mel features for a manifest (sharded, resumable)
  train       projector-only QLoRA (or full projector) with CER-selected checkpoints
  transcribe  batched transcription of files, folders or manifests (JSONL / text / SRT)
  evaluate    transcribe a manifest and score it: CER/WER/sWER, CIs, term recall, report.html
  export      merge the adapter: transformers checkpoint, or Mistral format for vLLM

examples:
  voxadapt demo --out runs/demo
  voxadapt prepare aihub /data/208 --out data/ko-med --valid-size 0.05 --test-size 0.05
  voxadapt cache data/ko-med/*.jsonl --model mistralai/Voxtral-Mini-3B-2507 --out cache/ko-med
  voxadapt train --config configs/ko-medical-qlora.yaml --cache cache/ko-med \\
      --train data/ko-med/train.jsonl --valid data/ko-med/valid.jsonl
  voxadapt evaluate data/ko-med/test.jsonl --adapter runs/voxadapt/adapter --out runs/eval
  voxadapt export --adapter runs/voxadapt/adapter --out models/ko-med --format mistral
  voxadapt COMMAND --help
"""

CACHE_EPILOG = """\
The cache holds log-mel frames that touch real audio (compact codec or fp16) plus one padding
value per clip, in safetensors shards; `voxadapt train --cache DIR` rebuilds Voxtral's 30 s
inputs (within 1e-3 of the processor's).
Re-running computes only new or changed clips; killing it never corrupts the cache.

examples:
  voxadapt cache data/ko-med/train.jsonl data/ko-med/valid.jsonl \\
      --model mistralai/Voxtral-Mini-3B-2507 --out cache/ko-med --jobs 16
"""

TRANSCRIBE_EPILOG = """\
Clips are grouped by 30 s chunk count and sorted by length, decoded greedily in batches with
a KV cache. The LLM quantization defaults to what the adapter was trained with. Each output
record flags repetition loops and transcripts cut by the max-new-tokens cap; a leaked
`lang:xx` prefix is removed. Unreadable inputs are reported per file; the rest still run.

examples:
  voxadapt transcribe call.wav --adapter runs/voxadapt/adapter
  voxadapt transcribe recordings/ --adapter runs/voxadapt/adapter --out out.jsonl --batch-size 32
  voxadapt transcribe data/ko-med/test.jsonl --out subs/ --format srt
  voxadapt transcribe clip.flac --model mistralai/Voxtral-Mini-3B-2507 --language auto
"""

EVALUATE_EPILOG = """\
Outputs in --out: predictions.jsonl (one row per utterance, written as batches finish),
metrics.json, report.html, evaluate_config.yaml. After a crash or Ctrl-C, the same command
with --resume decodes only what is missing. Metrics are defined in the README.

examples:
  voxadapt evaluate data/ko-med/test.jsonl --out runs/eval-base          # zero-shot baseline
  voxadapt evaluate data/ko-med/test.jsonl --adapter runs/voxadapt/adapter --out runs/eval \\
      --terms configs/ko-medical-terms.txt --compare runs/eval-base/predictions.jsonl
  voxadapt evaluate data/ko-med/test.jsonl --adapter runs/voxadapt/adapter --out runs/eval --resume
"""

EXPORT_EPILOG = """\
formats:
  hf       LoRA merged into the projector; a complete transformers checkpoint with the
           processor and tokenizer (VoxtralForConditionalGeneration.from_pretrained(OUT))
  mistral  consolidated.safetensors + params.json + tekken.json, the layout vLLM serves:
           vllm serve OUT --tokenizer-mode mistral --config-format mistral --load-format mistral

examples:
  voxadapt export --adapter runs/voxadapt/adapter --out models/ko-med-hf
  voxadapt export --adapter runs/voxadapt/adapter --out models/ko-med-vllm --format mistral
"""

TRAIN_EPILOG = """\
Only the audio->LLM projector trains; the LLM is quantized (nf4 by default, also on CPU via
bitsandbytes), the audio tower, projector and LM head are not. Each evaluation transcribes the
valid set (greedy, KV cache) and keeps the adapter with the lowest CER in OUTPUT_DIR/adapter.
Ctrl-C saves OUTPUT_DIR/checkpoint-last; --resume continues from it.
Multi-GPU: torchrun --nproc_per_node=4 -m voxadapt.cli train ...  (or accelerate launch)

examples:
  voxadapt train --config configs/ko-medical-qlora.yaml --train data/train.jsonl \\
      --valid data/valid.jsonl --cache cache/ko-med --output-dir runs/ko-med
  voxadapt train --model mistralai/Voxtral-Mini-3B-2507 --train data/train.jsonl \\
      --projector full --quantization none --dtype bf16 --max-steps 2000 --eval-steps 250
  voxadapt train --config runs/ko-med/config.yaml --resume
"""

PREPARE_EPILOG = """\
formats:
  scp     lines 'path|transcript' (paths relative to the SCP file's folder)
  aihub   AI-Hub label tree: .../{간호사,의사,환자}/<speaker>/<utt>.json beside <utt>.wav,
          or parallel 라벨링데이터/원천데이터 trees matched by file stem
  kaldi   data dir with wav.scp and text (utt2spk optional)
  jsonl   JSON lines: audio/audio_path/audio_filepath, text/transcript,
          optional duration, speaker, language (other fields are kept as metadata)

outputs in --out:
  train.jsonl [valid.jsonl test.jsonl]  one utterance per line (id, audio, text, duration...)
  rejected.jsonl                        every dropped input item with its reason and origin
  stats.json, durations.png             counts, hours, distributions, rejections; duration histogram
  prepare_config.yaml                   the resolved options (reusable with --config)

examples:
  voxadapt prepare scp dataset/train.scp --out data/seed
  voxadapt prepare aihub /data/208 --out data/ko-med --valid-size 0.05 --test-size 0.05
  voxadapt prepare kaldi data/train --out data/kaldi --text-mode phonetic --drop-fillers
  voxadapt prepare jsonl clips.jsonl --out data/j --min-duration 1 --max-duration 30 --jobs 16
"""


def _split_size(text: str) -> float:
    """--valid-size/--test-size: a fraction (0.05) or a count (500)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction or a count, got {text!r}") from None
    if value < 0 or (value >= 1 and not value.is_integer()):
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1) or a whole count: {text}")
    return value


def _flag(parser: argparse.ArgumentParser, *names: str, help: str) -> None:
    """A boolean switch whose absence means 'not given' (so YAML values are not overridden)."""
    parser.add_argument(*names, action="store_const", const=True, default=None, help=help)


def _add_prepare(subparsers: argparse._SubParsersAction) -> None:
    from voxadapt.sources import FORMATS
    from voxadapt.text import TEXT_MODES

    parser = subparsers.add_parser(
        "prepare",
        help="build clean train/valid/test manifests from a speech dataset",
        description="Read a speech dataset, normalize Korean transcripts, validate audio, "
        "filter by duration, split by speaker, and write manifests. Every input item is "
        "either kept or listed in rejected.jsonl with its reason.",
        epilog=PREPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "source_format",
        metavar="FORMAT",
        choices=FORMATS,
        help=f"input format: {', '.join(FORMATS)}",
    )
    parser.add_argument("source", metavar="SOURCE", type=Path, help="input file or folder")
    parser.add_argument(
        "--out",
        dest="out_dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="output folder (created if missing)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE.yaml",
        help="YAML with PrepareConfig options; flags override it",
    )
    text = parser.add_argument_group("transcripts")
    text.add_argument(
        "--text-mode",
        choices=TEXT_MODES,
        help="dual transcription (철자)/(발음): keep the spelling (default) or the pronunciation",
    )
    _flag(text, "--drop-fillers", help="drop filler words such as 음/ 아/ (default: keep the word)")
    _flag(text, "--strip-punctuation", help="remove . , ? ! from training text (default: keep)")
    text.add_argument("--language", help="language for items whose source has none (default: ko)")
    audio = parser.add_argument_group("audio")
    audio.add_argument(
        "--min-duration",
        dest="min_duration_s",
        type=float,
        metavar="S",
        help="reject clips shorter than S seconds (default: 3)",
    )
    audio.add_argument(
        "--max-duration",
        dest="max_duration_s",
        type=float,
        metavar="S",
        help="reject clips longer than S seconds (default: 25)",
    )
    audio.add_argument(
        "--duration-tolerance",
        dest="duration_tolerance_s",
        type=float,
        metavar="S",
        help="reject when a label's duration differs from the "
        "audio's by more than S seconds (default: 1)",
    )
    _flag(
        audio,
        "--full-decode",
        help="decode every file to validate it (default: only float "
        "and compressed files, whose headers cannot prove the samples are finite)",
    )
    audio.add_argument(
        "--jobs", type=int, metavar="N", help="parallel audio probes (default: all cores)"
    )
    split = parser.add_argument_group("splits")
    split.add_argument(
        "--valid-size",
        type=_split_size,
        metavar="X",
        help="validation split: fraction (0.05) or count (500)",
    )
    split.add_argument(
        "--test-size",
        type=_split_size,
        metavar="X",
        help="test split: fraction (0.05) or count (500)",
    )
    split.add_argument(
        "--split-by",
        choices=("speaker", "utterance"),
        help="speaker (default): no speaker in two splits; utterance: random",
    )
    split.add_argument("--seed", type=int, help="split seed (default: 0)")
    parser.set_defaults(handler=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    from voxadapt.config import build_config
    from voxadapt.prepare import PrepareConfig, prepare
    from voxadapt.report import format_prepare_summary

    options = {k: v for k, v in vars(args).items() if k not in ("handler", "config", "verbose")}
    config = build_config(PrepareConfig, args.config, **options)
    result = prepare(config)
    print(format_prepare_summary(result.stats))
    print(f"\nmanifests: {', '.join(str(p) for p in result.manifests.values())}")
    print(f"rejected:  {result.rejected_path}")
    print(f"stats:     {result.stats_path}  plot: {result.plot_path}")
    return 0


def _add_cache(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="compute exact, compact log-mel features for manifests",
        description="Featurize every utterance of the manifests with the model's processor "
        "settings into a sharded feature store.",
        epilog=CACHE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "manifests",
        metavar="MANIFEST",
        type=Path,
        nargs="+",
        help="JSONL manifests from `voxadapt prepare`",
    )
    parser.add_argument("--model", required=True, help="hub id or folder whose processor to use")
    parser.add_argument("--out", dest="out_dir", type=Path, required=True, metavar="DIR")
    parser.add_argument("--jobs", type=int, help="worker processes (default: all cores)")
    parser.add_argument(
        "--shard-size", type=int, default=256, help="utterances per shard file (default: 256)"
    )
    parser.add_argument(
        "--codec",
        choices=("compact", "fp16"),
        default="compact",
        help="compact: quantized (error <= 9.75e-4) + zlib, ~0.41x the size of fp16 (default); "
        "fp16: error <= 4.9e-4, fastest to write",
    )
    parser.set_defaults(handler=_run_cache)


def _run_cache(args: argparse.Namespace) -> int:
    from voxadapt.features import build_cache

    if args.shard_size < 1 or (args.jobs is not None and args.jobs < 1):
        raise VoxadaptError("--shard-size and --jobs must be >= 1")
    result = build_cache(
        args.manifests,
        args.model,
        args.out_dir,
        jobs=args.jobs,
        shard_size=args.shard_size,
        codec=args.codec,
    )
    print(
        f"cache: {result.out_dir}\n  utterances {result.utterances}, computed "
        f"{result.computed}, already cached {result.reused}, failed {result.failed}\n"
        f"  {result.bytes_on_disk / 1e6:.1f} MB on disk "
        f"({result.bytes_per_utterance / 1e3:.0f} kB per utterance), {result.seconds:.1f} s"
    )
    if result.failed:
        print(f"  failures are listed in {result.out_dir / 'cache_errors.jsonl'}")
    return 0 if result.failed < result.utterances else 1


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    from voxadapt.model import DTYPES, PROJECTOR_MODES, QUANTIZATIONS
    from voxadapt.train import SCHEDULERS

    parser = subparsers.add_parser(
        "train",
        help="train Voxtral's audio projector (LoRA or full) on manifests",
        description="Projector-only fine-tuning of Voxtral with a quantized LLM, evaluation by "
        "CER during training, best-checkpoint selection, TensorBoard logs and resumable "
        "checkpoints. Options may come from --config FILE.yaml; flags override it.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE.yaml",
        help="YAML with TrainConfig options (see configs/)",
    )
    io_group = parser.add_argument_group("data and model")
    io_group.add_argument(
        "--model", help="hub id or folder (default: mistralai/Voxtral-Mini-3B-2507)"
    )
    io_group.add_argument("--train", type=Path, metavar="JSONL", help="training manifest")
    io_group.add_argument(
        "--valid",
        type=Path,
        metavar="JSONL",
        help="validation manifest (selects the best checkpoint by CER)",
    )
    io_group.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="feature cache from `voxadapt cache` (default: compute on the fly)",
    )
    io_group.add_argument(
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="where adapter/, checkpoints and logs go (default: runs/voxadapt)",
    )
    io_group.add_argument(
        "--language", help="prompt language (default ko; auto = detect; manifest = each record's)"
    )
    model_group = parser.add_argument_group("what trains")
    model_group.add_argument(
        "--quantization", choices=QUANTIZATIONS, help="LLM weights: nf4 (default), int8 or none"
    )
    model_group.add_argument(
        "--projector", choices=PROJECTOR_MODES, help="lora (default) or full projector"
    )
    model_group.add_argument("--lora-r", type=int, help="LoRA rank (default 8)")
    model_group.add_argument("--lora-alpha", type=int, help="LoRA alpha (default 16)")
    model_group.add_argument("--lora-dropout", type=float, help="LoRA dropout (default 0.05)")
    model_group.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        help="compute dtype (default bf16 on capable GPUs, fp32 on CPU)",
    )
    _flag(model_group, "--gradient-checkpointing", help="recompute LLM activations in backward")
    _flag(model_group, "--torch-compile", help="torch.compile the model")
    loop = parser.add_argument_group("schedule")
    loop.add_argument("--epochs", type=float, help="default 2")
    loop.add_argument("--max-steps", type=int, help="optimizer steps (overrides --epochs)")
    loop.add_argument("--batch-size", type=int, help="per device micro-batch (default 8)")
    loop.add_argument("--grad-accum", type=int, help="micro-batches per step (default 4)")
    loop.add_argument("--lr", type=float, help="peak learning rate (default 1e-4)")
    loop.add_argument("--weight-decay", type=float, help="default 0")
    loop.add_argument("--scheduler", choices=SCHEDULERS, help="default cosine")
    loop.add_argument("--warmup-ratio", type=float, help="default 0.03")
    loop.add_argument("--max-grad-norm", type=float, help="default 1.0")
    loop.add_argument("--seed", type=int, help="default 0")
    loop.add_argument("--num-workers", type=int, help="DataLoader workers (default 2)")
    evals = parser.add_argument_group("logging and evaluation")
    evals.add_argument("--logging-steps", type=int, help="default 10")
    evals.add_argument("--eval-steps", type=int, help="default 200 (and at the end)")
    evals.add_argument("--eval-samples", type=int, help="evaluate on a fixed random subset")
    evals.add_argument("--eval-batch-size", type=int, help="default 16")
    evals.add_argument(
        "--early-stopping-patience", type=int, help="stop after N evaluations without a better CER"
    )
    _flag(parser, "--resume", help="continue from OUTPUT_DIR/checkpoint-last")
    parser.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from voxadapt.config import build_config
    from voxadapt.train import TrainConfig, train

    options = {k: v for k, v in vars(args).items() if k not in ("handler", "config", "verbose")}
    config = build_config(TrainConfig, args.config, **options)
    result = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        state = result.state
        best = (
            f"best eval CER {state.best_cer:.4f} at step {state.best_step}"
            if state.best_cer is not None
            else "no validation set: adapter = last step"
        )
        print(
            f"trained {state.step} steps; {best}\nadapter: {result.adapter_dir}\n"
            f"logs: {result.output_dir / 'tensorboard'} (tensorboard --logdir ...)"
        )
    return 0


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on a tiny random Voxtral (offline, CPU)",
        description="Build a tiny random Voxtral, prepare the bundled Korean sample clips, "
        "cache features, train the projector for a few dozen steps and evaluate. It proves the "
        "pipeline works on this machine; a random model does not transcribe. Real results "
        "need --model mistralai/Voxtral-Mini-3B-2507 on a GPU.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  voxadapt demo --out runs/demo",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/demo"),
        metavar="DIR",
        help="where everything goes (default: runs/demo)",
    )
    parser.add_argument("--steps", type=int, default=30, help="training steps (default 30)")
    parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from voxadapt.demo import run_demo

    run_demo(args.out, steps=args.steps)
    return 0


def _add_decoding_flags(parser: argparse.ArgumentParser) -> None:
    from voxadapt.model import DTYPES, QUANTIZATIONS

    group = parser.add_argument_group("model and decoding")
    group.add_argument(
        "--model",
        help="base model: hub id or folder (default: the adapter's base model, "
        "else mistralai/Voxtral-Mini-3B-2507)",
    )
    group.add_argument("--adapter", type=Path, metavar="DIR", help="adapter from voxadapt train")
    group.add_argument(
        "--quantization",
        choices=QUANTIZATIONS,
        help="LLM weights (default: as the adapter was trained; nf4 without one)",
    )
    group.add_argument("--dtype", choices=tuple(DTYPES), help="default bf16 on GPU, fp32 on CPU")
    group.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    group.add_argument(
        "--language", help="prompt language (default ko; auto = the model detects it)"
    )
    group.add_argument("--batch-size", type=int, help="clips per batch (default 16)")
    group.add_argument(
        "--tokens-per-second",
        dest="tokens_per_s",
        type=float,
        help="runaway cap: at most 20 + this x clip seconds new tokens (default 15)",
    )
    group.add_argument("--max-new-tokens", type=int, help="fixed cap instead (overrides)")
    group.add_argument("--min-new-tokens", type=int, help="force at least N tokens (benchmarks)")
    group.add_argument(
        "--workers",
        dest="num_workers",
        type=int,
        help="feature-computing worker processes (default 2)",
    )


def _base_model(args: argparse.Namespace) -> str:
    """--model, else the base model recorded in the adapter, else the hub default."""
    if args.model:
        return args.model
    if args.adapter is not None:
        from voxadapt.infer import read_adapter_info

        base = read_adapter_info(args.adapter).get("base_model")
        if base:
            return str(base)
    return "mistralai/Voxtral-Mini-3B-2507"


def _add_transcribe(subparsers: argparse._SubParsersAction) -> None:
    from voxadapt.infer import OUTPUT_FORMATS

    parser = subparsers.add_parser(
        "transcribe",
        help="transcribe audio files, folders or manifests",
        description="Batched greedy transcription with Voxtral (optionally with a trained "
        "projector adapter).",
        epilog=TRANSCRIBE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs",
        metavar="INPUT",
        type=Path,
        nargs="+",
        help="audio file, folder (searched recursively) or JSONL manifest",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="PATH",
        help="output file (.jsonl / .txt) or folder (srt); default: text on stdout",
    )
    parser.add_argument(
        "--format",
        choices=OUTPUT_FORMATS,
        help="jsonl (all fields and flags), txt (id<TAB>text) or srt (one file per clip)",
    )
    _add_decoding_flags(parser)
    parser.set_defaults(handler=_run_transcribe)


def _decode_options(args: argparse.Namespace):
    from voxadapt.infer import DecodeOptions

    defaults = DecodeOptions()
    language = args.language or "ko"
    return DecodeOptions(
        batch_size=args.batch_size or defaults.batch_size,
        language=None if language == "auto" else language,
        tokens_per_s=args.tokens_per_s or defaults.tokens_per_s,
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.min_new_tokens,
        num_workers=defaults.num_workers if args.num_workers is None else args.num_workers,
    )


def _run_transcribe(args: argparse.Namespace) -> int:
    from voxadapt.infer import TranscribeConfig, transcribe

    options = _decode_options(args)
    if options.batch_size < 1 or options.num_workers < 0:
        raise VoxadaptError("--batch-size must be >= 1 and --workers >= 0")
    result = transcribe(
        TranscribeConfig(
            inputs=args.inputs,
            model=_base_model(args),
            adapter=args.adapter,
            out=args.out,
            format=args.format,
            quantization=args.quantization,
            dtype=args.dtype,
            device=args.device,
            decode=options,
        )
    )
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


def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="transcribe a manifest and score it (CER, WER, sWER, CIs, report.html)",
        description="Evaluate a base model or an adapter on a manifest with references.",
        epilog=EVALUATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("manifest", type=Path, metavar="MANIFEST", help="JSONL with references")
    parser.add_argument("--out", dest="out_dir", type=Path, metavar="DIR", required=True)
    parser.add_argument("--config", type=Path, metavar="FILE.yaml", help="EvaluateConfig YAML")
    _add_decoding_flags(parser)
    scoring = parser.add_argument_group("scoring")
    scoring.add_argument("--terms", type=Path, metavar="FILE", help="terms, one per line")
    scoring.add_argument(
        "--compare",
        type=Path,
        metavar="PREDICTIONS",
        help="another run's predictions.jsonl: paired bootstrap of the CER difference",
    )
    scoring.add_argument(
        "--bootstrap", type=int, help="bootstrap resamples for 95%% CIs (default 1000, 0 = off)"
    )
    scoring.add_argument("--seed", type=int, help="bootstrap seed (default 0)")
    scoring.add_argument("--limit", type=int, help="only the first N utterances")
    _flag(parser, "--resume", help="continue an interrupted run in --out")
    _flag(parser, "--overwrite", help="discard earlier predictions in --out")
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from voxadapt.config import build_config
    from voxadapt.evaluate import EvaluateConfig, evaluate
    from voxadapt.report import format_metrics_summary

    options = {
        k: v
        for k, v in vars(args).items()
        if k not in ("handler", "config", "verbose", "model", "num_workers")
    }
    options["model"] = _base_model(args) if (args.model or args.adapter) else None
    options["num_workers"] = args.num_workers
    config = build_config(EvaluateConfig, args.config, **options)
    result = evaluate(config)
    print(format_metrics_summary(result.metrics))
    print(
        f"\npredictions: {result.predictions} ({result.decoded} decoded now)\n"
        f"metrics:     {result.metrics_path}"
        + (f"\nreport:      {result.report}" if result.report else "")
    )
    if result.failed:
        print(f"{len(result.failed)} utterances failed to load: see failed.jsonl")
    return 0


def _add_export(subparsers: argparse._SubParsersAction) -> None:
    from voxadapt.export import EXPORT_FORMATS
    from voxadapt.model import DTYPES

    parser = subparsers.add_parser(
        "export",
        help="merge the adapter into a servable checkpoint (transformers or Mistral/vLLM)",
        description="Merge a trained projector adapter into the base model and save it.",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", help="base model (default: the adapter's base model)")
    parser.add_argument("--adapter", type=Path, required=True, metavar="DIR")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="new folder")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="hf", help="default hf")
    parser.add_argument(
        "--dtype", choices=tuple(DTYPES), default="bf16", help="saved weights (default bf16)"
    )
    parser.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from voxadapt.export import export

    result = export(_base_model(args), args.adapter, args.out, fmt=args.format, dtype=args.dtype)
    print(f"exported ({result.format}) to {result.out_dir}:")
    for path in result.files:
        print(f"  {path.name}  {path.stat().st_size / 1e6:.1f} MB")
    if result.format == "mistral":
        print(
            f"serve: vllm serve {result.out_dir} --tokenizer-mode mistral "
            "--config-format mistral --load-format mistral"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to render --help in tests)."""
    parser = argparse.ArgumentParser(
        prog="voxadapt",
        description="Adapt Mistral's Voxtral to Korean (medical) speech: prepare data, train "
        "the audio projector with LoRA, transcribe and score.",
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"voxadapt {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more logging (-v: debug messages, -vv: also from libraries)",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_demo(subparsers)
    _add_prepare(subparsers)
    _add_cache(subparsers)
    _add_train(subparsers)
    _add_transcribe(subparsers)
    _add_evaluate(subparsers)
    _add_export(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `voxadapt` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    # Our own progress messages at INFO (DEBUG with -v); other libraries only warn (-vv: all).
    logging.basicConfig(
        level=logging.DEBUG if args.verbose >= 2 else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return args.handler(args)
    except VoxadaptError as exc:
        print(f"voxadapt: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("voxadapt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
