"""The `voxadapt` console script: parse (voxadapt.cli_parser), run one stage, summarize.

Only the stage being run is imported, and only once its arguments parsed: `--help`, argument
errors and `--version` answer without importing torch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from voxadapt.cli_parser import COMMANDS, Command, build_parser, parse_arguments, parser_for
from voxadapt.errors import StageInterrupted, VoxadaptError

__all__ = ["COMMANDS", "build_parser", "main", "stop_signals"]
_parse = parse_arguments  # the name tests/test_readme.py parses README commands with

log = logging.getLogger("voxadapt")


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
        deliberate = (stats.get("deliberate_rejections") or {}).get("count")
        note = f"; {deliberate} on purpose, see above" if deliberate else ""
        print(f"\nrejected {stats['rejected']} of {stats['input_items']} ({percent(share)}{note})")
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
    if loops:
        summary += f"; {loops} with repetition loops"
    if result.output is not None:
        summary += f" -> {result.output}"
    if result.n_errors:  # exit 3 (0 with --allow-failures; 1 when all failed)
        where = "the warnings above"
        if result.rows_file is not None:
            where += f" and the [error: reason] rows in {result.rows_file}"
        summary += f"\n{result.n_errors} of {len(result.rows)} inputs failed: see {where}"
        if result.allow_failures and done:
            summary += " (--allow-failures: exit status 0)"
    print(summary, file=sys.stderr)
    return result.exit_status


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
    # the table fits the terminal; --json gives JSON lines; --plan the memory plan
    print(result.render())
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


# How each command's result is printed; each returns the exit code.
SUMMARIES: dict[str, Callable[[Any], int]] = {
    "demo": _demo_summary,
    "prepare": _prepare_summary,
    "cache": _cache_summary,
    "train": _train_summary,
    "transcribe": _transcribe_summary,
    "evaluate": _evaluate_summary,
    "compare": _compare_summary,
    "score": _score_summary,
    "export": _export_summary,
    "doctor": _doctor_summary,
    "redact": _redact_summary,
    "serve": _serve_summary,
}


def _run(command: Command, args: argparse.Namespace) -> int:
    from voxadapt.config import build_config, config_overrides

    cls = command.config_class()
    config = build_config(cls, args.config, **config_overrides(args, cls))
    return SUMMARIES[command.name](command.stage()(config))


def _quiet_libraries(verbose: int) -> None:
    """Library progress bars and warnings only with -v: they drown our own output."""
    import warnings

    if verbose:
        return
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="(peft|transformers|torch)")
    # transformers reads both when it is first imported: a stage that never needs it (score,
    # doctor's report, redact) does not pay for importing it here
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:  # imported already (main() called in-process again)
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


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
        from voxadapt.filesystem import describe_os_error

        print(f"voxadapt: error: {describe_os_error(exc)}", file=sys.stderr)
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
    words = sys.argv[1:] if argv is None else list(argv)
    parser = parser_for(words)
    args = parse_arguments(parser, words)
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
