"""The `voxadapt` console script: one subcommand per stage, argument parsing only."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from voxadapt import __version__
from voxadapt.errors import VoxadaptError

log = logging.getLogger("voxadapt")

MAIN_EPILOG = """\
stages:
  prepare     SCP / AI-Hub tree / Kaldi dir / JSONL -> train/valid/test manifests

examples:
  voxadapt prepare aihub /data/208 --out data/ko-med --valid-size 0.05 --test-size 0.05
  voxadapt prepare --help
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
    _add_prepare(subparsers)
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
