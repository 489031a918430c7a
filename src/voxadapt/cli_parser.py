"""The `voxadapt` argument parser: the commands, their help texts, one-line argument errors.

Options are declared once, by the config dataclasses in the stage modules, and a stage module
imports its libraries (torch among them). The parser therefore adds a command's options only
for the command being run (`build_parser(stages=...)`): `voxadapt --help`, `--version` and a
mistyped command import no stage at all, `voxadapt train ...` imports only train's.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import shutil
import sys
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from voxadapt import __version__

MAIN_EPILOG = """\
examples:
  voxadapt demo --out runs/demo
  voxadapt prepare aihub /data/208 --out data/ko-med --valid-size 0.05 --test-size 0.05
  voxadapt cache data/ko-med/*.jsonl --model mistralai/Voxtral-Mini-3B-2507 --out cache/ko-med
  voxadapt train --config configs/ko-medical-qlora.yaml --cache cache/ko-med \\
      --train data/ko-med/train.jsonl --valid data/ko-med/valid.jsonl
  voxadapt evaluate data/ko-med/test.jsonl --adapter runs/ko-med/adapter --out runs/eval
  voxadapt export --adapter runs/ko-med/adapter --out models/ko-med --format mistral
  voxadapt compare data/ko-med/test.jsonl --out runs/which-base \\
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
  voxadapt cache data/ko-med/train.jsonl data/ko-med/valid.jsonl \\
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
with --resume decodes only what is missing. Metrics are defined in docs/stages/evaluate.md.

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
  voxadapt compare data/ko-med/test.jsonl --out runs/which-base \\
      --system mistralai/Voxtral-Mini-3B-2507 --system Qwen/Qwen3-ASR-1.7B-hf
  voxadapt compare data/ko-med/test.jsonl --out runs/which-adapter --normalize numbers \\
      --system base=Qwen/Qwen3-ASR-1.7B-hf --system tuned=runs/ko-med-qwen/adapter \\
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
  voxadapt train --config configs/ko-medical-qlora.yaml --model Qwen/Qwen3-ASR-1.7B-hf \\
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
  stats.json, durations.png             counts, hours, distributions, rejections; histogram
  prepare_config.yaml                   the resolved options (reusable with --config)

examples:
  voxadapt prepare scp dataset/train.scp --out data/seed
  voxadapt prepare aihub /data/208 --out data/ko-med --valid-size 0.05 --test-size 0.05
  voxadapt prepare kaldi data/train --out data/kaldi --text-mode phonetic --drop-fillers
  voxadapt prepare scp train.scp --out data/scp --speaker-from parent --test-size 0.05
  voxadapt prepare nemo manifest.json --out data/nemo --emit nemo
  voxadapt prepare jsonl clips.jsonl --out data/j --min-duration 1 --max-duration 30 --jobs 16
"""

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


@dataclass(frozen=True)
class Command:
    """A subcommand: where its config dataclass and stage function live, and its help texts."""

    name: str
    module: str  # voxadapt.stages.<module> holds the config class and the stage function
    config: str
    function: str
    help: str
    description: str
    epilog: str

    def config_class(self) -> type:
        """The command's config dataclass (imports its stage module)."""
        return getattr(importlib.import_module(f"voxadapt.stages.{self.module}"), self.config)

    def stage(self) -> Any:
        """The stage function the command runs."""
        return getattr(importlib.import_module(f"voxadapt.stages.{self.module}"), self.function)


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
    ),
    Command(
        "evaluate",
        "evaluate",
        "EvaluateConfig",
        "evaluate",
        "transcribe a manifest and score it (CER, WER, sWER, CIs, report.html)",
        "Evaluate a base model or an adapter on a manifest with references.",
        EVALUATE_EPILOG,
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
    ),
    Command(
        "export",
        "export",
        "ExportConfig",
        "export",
        "merge the adapter into a servable checkpoint (transformers or Mistral/vLLM)",
        "Merge a trained projector adapter into the base model and save it.",
        EXPORT_EPILOG,
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
        "line per check: ok, or what to do. Exits 1 when something required fails. --plan "
        "estimates the GPU memory of training and inference instead.",
        "examples:\n  voxadapt doctor\n  voxadapt doctor --path /scratch/runs --json\n"
        "  voxadapt doctor --plan --gpu-memory-gb 24    # GPU memory of every base\n"
        "  voxadapt doctor --plan --plan-model voxtral-mini --micro-batch 4",
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
    ),
)


COMMAND_NAMES = tuple(command.name for command in COMMANDS)

MAX_HELP_WIDTH = 100  # columns: longer lines read badly even on a wide terminal
MIN_HELP_WIDTH = 40  # a terminal that reports 10 columns still gets readable help
# Programs whose lines in an epilog are shell commands: wrapped with `\` continuations.
COMMAND_WORDS = ("voxadapt", "torchrun", "vllm", "curl", "cat", "accelerate")


def cell_width(text: str) -> int:
    """Terminal columns `text` takes: Hangul and other wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def wrap_cells(
    text: str, width: int, indent: str = "", subsequent_indent: str | None = None
) -> list[str]:
    """Greedy word wrap of `text` into lines of at most `width` terminal columns (see
    `cell_width`); a word longer than a line (a URL, a path) stays whole on its own line."""
    subsequent_indent = indent if subsequent_indent is None else subsequent_indent
    lines: list[str] = []
    prefix, line = indent, ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if line and cell_width(prefix + candidate) > width:
            lines.append(prefix + line)
            prefix, line = subsequent_indent, word
        else:
            line = candidate
    if line:
        lines.append(prefix + line)
    return lines


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def _epilog_blocks(text: str) -> list[tuple[str, list[str]]]:
    """The blocks of a description or epilog, as (kind, lines): `blank`; `heading` (a line
    ending with `:` above indented lines: `examples:`); `prose` (consecutive lines not
    indented); `item` (an indented line with the deeper lines that continue it, and the lines
    a trailing `\\` continues a command with)."""
    lines = text.splitlines()
    blocks: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(lines):
        line, after = lines[i], lines[i + 1] if i + 1 < len(lines) else ""
        i += 1
        if not line.strip():
            blocks.append(("blank", [line]))
        elif not line[0].isspace():
            if line.rstrip().endswith(":") and after[:1].isspace():
                blocks.append(("heading", [line]))
            elif blocks and blocks[-1][0] == "prose":
                blocks[-1][1].append(line)
            else:
                blocks.append(("prose", [line]))
        else:
            item = [line]
            while i < len(lines) and (
                item[-1].rstrip().endswith("\\")
                or (
                    lines[i].strip()
                    and _indent_of(lines[i]) > _indent_of(line)
                    and lines[i].split()[0] not in COMMAND_WORDS  # a command of its own
                )
            ):
                item.append(lines[i])
                i += 1
            blocks.append(("item", item))
    return blocks


def _wrap_command(lines: list[str], width: int) -> list[str]:
    """A shell command (its lines continued with `\\`) refilled to `width`, continued with
    ` \\` on deeper lines; a trailing `# comment` moves above it (a continuation inside a
    comment would run its words)."""
    lead = " " * _indent_of(lines[0])
    words = " ".join(line.strip().removesuffix("\\") for line in lines)
    command, _, comment = words.partition("  #")
    above = [f"{lead}# {comment.strip().removeprefix('#').strip()}"] if comment.strip() else []
    parts = wrap_cells(command, width - 2, lead, lead + "    ")
    return above + [part + " \\" for part in parts[:-1]] + parts[-1:]


def _wrap_definition(lines: list[str], width: int) -> list[str]:
    """A definition (`jsonl  one file: ...` and the deeper lines continuing it) refilled to
    `width`, its text hanging under the text's first column."""
    lead = " " * _indent_of(lines[0])
    body = " ".join(line.strip() for line in lines)
    term = re.match(r"(.*?\S)(\s{2,})(?=\S)", body)
    if term is None:
        return wrap_cells(body, width, lead)
    prefix = lead + term.group(0)
    return wrap_cells(body[term.end() :], width, prefix, " " * cell_width(prefix))


def fill_epilog(text: str, width: int, indent: str = "") -> list[str]:
    """The lines of a description or epilog at most `width` terminal columns wide (but for
    words longer than that): blocks (see `_epilog_blocks`) are kept as written where they
    fit; otherwise prose is refilled, an example command (under `examples:`, or starting with
    a COMMAND_WORDS program) continued with `\\`, a definition hung under its text."""
    lines: list[str] = []
    in_examples = False
    for kind, block in _epilog_blocks(text):
        block = [indent + line if line.strip() else "" for line in block]
        if kind == "heading":
            in_examples = block[0].strip().startswith("examples")
        if all(cell_width(line) <= width for line in block):
            lines.extend(block)
        elif kind == "prose" or kind == "heading":
            lines.extend(wrap_cells(" ".join(block), width, indent))
        elif in_examples or block[0].split()[0] in COMMAND_WORDS:
            lines.extend(_wrap_command(block, width))
        else:
            lines.extend(_wrap_definition(block, width))
    return lines


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that fits the terminal (COLUMNS; at most MAX_HELP_WIDTH): option help wrapped by
    terminal columns (Hangul takes two); descriptions and epilogs keep the line breaks they
    were written with wherever a line fits and are re-wrapped where one does not: prose
    paragraphs refilled, definitions hung, example commands continued with `\\`."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:  # argparse's own choice, capped: the terminal's width less 2
            columns = shutil.get_terminal_size().columns
            width = max(min(columns, MAX_HELP_WIDTH), MIN_HELP_WIDTH) - 2
        super().__init__(prog, indent_increment, max_help_position, width)

    def _split_lines(self, text: str, width: int) -> list[str]:
        return wrap_cells(text, width) or [""]

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        filled = "\n".join(fill_epilog(text, width, indent))
        return filled + ("\n" if text.endswith("\n") else "")


class Parser(argparse.ArgumentParser):
    """argparse whose errors are two lines (what is wrong, with a guess where one is close,
    then where the help is) instead of the whole usage, exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print `PROG: error: MESSAGE` and `see: PROG --help` on stderr; exit 2."""
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\nsee: {self.prog} --help\n")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # argparse's check, with the closest choice named: `--quantization nf5`
        if action.choices is None or value in action.choices:
            return
        choices = [str(choice) for choice in action.choices]
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise argparse.ArgumentError(
            action, f"invalid choice {value!r}{hint}; choose from {', '.join(choices)}"
        )


def command_word(argv: Sequence[str]) -> str | None:
    """The command `argv` names: its first word that is not an option (voxadapt's own options
    take no values), or None (`voxadapt --help`)."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(stages: Collection[str] | None = None) -> Parser:
    """The argument parser, with the options of the commands in `stages` (default: every
    command; the CLI asks for the one it runs, so that it imports no other stage)."""
    parser = Parser(
        prog="voxadapt",
        description="Adapt a speech LLM (Mistral's Voxtral or Qwen3-ASR) to Korean (medical) "
        "speech: prepare data, train the audio projector with LoRA, transcribe, score and "
        "compare bases.",
        epilog=MAIN_EPILOG,
        formatter_class=HelpFormatter,
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
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            epilog=command.epilog,
            formatter_class=HelpFormatter,
            allow_abbrev=False,
        )
        if stages is None or command.name in stages:
            _add_options(sub, command)
        sub.set_defaults(command=command, subparser=sub)
    return parser


def _add_options(parser: argparse.ArgumentParser, command: Command) -> None:
    from voxadapt.config import add_config_arguments

    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE.yaml",
        help="YAML with these options; flags "
        "override it (nested sections such as decode: as in configs/)",
    )
    add_config_arguments(parser, command.config_class())


def parser_for(argv: Sequence[str]) -> Parser:
    """The parser for one command line: with the options of the command it names only."""
    name = command_word(argv)
    return build_parser(stages=() if name is None else (name,))


def parse_arguments(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """Parse `argv` (default: sys.argv); a mistyped command or option ends the run with two
    lines: the error with the closest name it has (`unrecognized argument --lora-rr (did you
    mean --lora-r?)`) and where the help is."""
    words = sys.argv[1:] if argv is None else list(argv)
    first = command_word(words)
    if first is not None and first not in COMMAND_NAMES:
        close = difflib.get_close_matches(first, COMMAND_NAMES, n=1)
        listed = f"; commands: {', '.join(COMMAND_NAMES)}"
        hint = f" (did you mean {close[0]}?)" if close else listed
        parser.error(f"unknown command {first!r}{hint}")
    args, extras = parser.parse_known_args(words)
    if extras:
        target = getattr(args, "subparser", parser)
        target.error(_unrecognized(extras, target, parser))
    return args


def _closest_option(flag: str, parser: argparse.ArgumentParser) -> str | None:
    """The option of `parser` closest to `flag`, compared without the dashes (every option
    shares `--`: `--bogus` is not close to `--out`)."""
    known = {name.lstrip("-"): name for action in parser._actions for name in action.option_strings}
    close = difflib.get_close_matches(flag.lstrip("-"), list(known), n=1)
    return known[close[0]] if close else None


def _unrecognized(
    extras: list[str], target: argparse.ArgumentParser, top: argparse.ArgumentParser
) -> str:
    """`unrecognized argument --lora-rr (did you mean --lora-r?)`: the first unknown option
    (or word), the closest option the command has, and any other unknown options."""
    options = [word for word in extras if word.startswith("-") and word != "-"]
    unknown = options[0] if options else extras[0]
    message = f"unrecognized argument {unknown}"
    flag = unknown.split("=", 1)[0]
    if unknown in options:
        close = _closest_option(flag, target)
        own = {name for action in top._actions for name in action.option_strings} - {"-h", "--help"}
        if close:
            message += f" (did you mean {close}?)"
        elif target is not top and flag in own:  # `voxadapt train -v`
            name = target.prog.split()[-1]
            message += f" ({flag} goes before the command: voxadapt {flag} {name} ...)"
    if len(options) > 1:
        message += f"; also unrecognized: {' '.join(options[1:])}"
    return message
