"""Batched transcription: base or adapted Voxtral, greedy with a KV cache, guarded decoding.

The prompt depends only on (number of 30 s chunks, language), so clips are grouped by chunk
count and sorted by duration: a batch's prompts have equal length and no padding enters the
decoder. Features are computed in DataLoader workers while the model decodes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from voxadapt.audio import AudioError, probe_audio
from voxadapt.data import PromptBuilder
from voxadapt.errors import ConfigError, VoxadaptError
from voxadapt.features import CompactFeatures, FeatureSpec, features_for_file, n_chunks_for
from voxadapt.manifest import Utterance, atomic_write, iter_jsonl
from voxadapt.model import QUANTIZATIONS, load_voxtral, resolve_dtype

log = logging.getLogger(__name__)

ADAPTER_INFO = "voxadapt_adapter.json"
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".oga", ".aiff", ".aif", ".w64"}
OUTPUT_FORMATS = ("jsonl", "txt", "srt")
# Voxtral sometimes writes the language tag of its prompt ("lang:ko") into the transcript.
_LANG_PREFIX = re.compile(r"^\s*lang:\s*([A-Za-z]{2,3})\b[\s:]*")
# Runaway loops on space-free text: a short unit (1-3 chars) 5+ times in a row spanning 8+
# characters ("네 네 네 네 네 네 네 네"), or a phrase (4-60 chars) 3+ times in a row.
# Digit runs ("1000000") are numbers, not loops.
_SHORT_LOOP = re.compile(r"(.{1,3}?)\1{4,}")
_PHRASE_LOOP = re.compile(r"(.{4,60}?)\1{2,}")
_LOOP_MIN_CHARS = 8


def read_adapter_info(adapter_dir: Path) -> dict[str, Any]:
    """The voxadapt_adapter.json that `voxadapt train` writes beside every adapter."""
    path = Path(adapter_dir) / ADAPTER_INFO
    if not path.is_file():
        raise VoxadaptError(f"{adapter_dir} is not a voxadapt adapter (no {ADAPTER_INFO})")
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def apply_adapter(model: torch.nn.Module, adapter_dir: Path) -> torch.nn.Module:
    """Put a trained projector (LoRA or full weights) onto a loaded base model."""
    info = read_adapter_info(adapter_dir)
    if info.get("projector") == "full":
        from safetensors.torch import load_file

        weights = load_file(str(Path(adapter_dir) / "projector.safetensors"))
        names = dict(model.named_parameters())
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise VoxadaptError(
                f"{adapter_dir}: projector weights do not fit this model (e.g. {unknown[0]})"
            )
        with torch.no_grad():
            for name, tensor in weights.items():
                names[name].copy_(tensor.to(names[name].dtype))
        return model
    import warnings

    from peft import PeftModel

    with warnings.catch_warnings():  # peft probes a deprecated transformers attribute
        warnings.simplefilter("ignore", FutureWarning)
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)


def load_for_inference(
    model_id: str | Path,
    adapter: Path | None = None,
    *,
    quantization: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.nn.Module, str]:
    """Base model (+ adapter) in eval mode; quantization defaults to what the adapter trained
    with (nf4 without an adapter). Returns the model and the quantization used."""
    if quantization is None:
        quantization = read_adapter_info(adapter).get("quantization", "nf4") if adapter else "nf4"
    if quantization not in QUANTIZATIONS:
        raise ConfigError(f"quantization must be one of {', '.join(QUANTIZATIONS)}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_voxtral(model_id, quantization=quantization, device=device, dtype=dtype)
    if adapter is not None:
        model = apply_adapter(model, adapter)
    model.eval()
    return model, quantization


def clean_transcript(text: str) -> tuple[str, str | None]:
    """Strip a leaked `lang:xx` prefix; return the text and the language it named."""
    match = _LANG_PREFIX.match(text)
    if not match:
        return text.strip(), None
    return text[match.end() :].strip(), match.group(1).lower()


def repetition_loop(text: str) -> str | None:
    """The repeated unit if `text` contains a runaway repetition loop, else None."""
    compact = "".join(text.split())
    for match in _SHORT_LOOP.finditer(compact):
        if len(match.group(0)) >= _LOOP_MIN_CHARS and not match.group(1).isdigit():
            return match.group(1)
    for match in _PHRASE_LOOP.finditer(compact):
        if not match.group(1).isdigit():
            return match.group(1)
    return None


def decode_cap(duration_s: float, tokens_per_s: float) -> int:
    """Generous max_new_tokens for a clip: stops runaway loops without cutting real text."""
    return int(20 + tokens_per_s * duration_s)


@dataclass
class DecodeOptions:
    """How transcripts are generated."""

    batch_size: int = 16
    language: str | None = "ko"  # None: the model detects the language
    tokens_per_s: float = 15.0  # runaway cap: 20 + this x clip seconds new tokens
    max_new_tokens: int | None = None  # fixed cap instead of the duration-based one
    min_new_tokens: int | None = None  # force at least this many (benchmarks)
    num_workers: int = 2  # feature workers


@dataclass
class Transcript:
    """The model's output for one clip, cleaned and checked."""

    text: str
    language: str | None  # language named by a leaked prefix, if any
    n_tokens: int
    truncated: bool  # hit max_new_tokens before EOS
    repetition_loop: str | None  # repeated unit of a detected loop


@dataclass
class AudioItem:
    """One clip to transcribe."""

    id: str
    audio: str
    duration: float  # seconds (header estimate; chunking uses the decoded length)
    language: str | None = None  # per-item prompt language, overrides DecodeOptions.language
    record: dict[str, Any] = field(default_factory=dict)  # fields carried to the output


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to `dtype` on `device`, or nothing for None (fp32 models)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def input_dtype(model: torch.nn.Module) -> torch.dtype:
    """dtype the audio tower expects for input_features."""
    for name, parameter in model.named_parameters():
        if "audio_tower" in name and parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def compute_dtype(model: torch.nn.Module) -> torch.dtype | None:
    """Autocast dtype for 4-bit/8-bit models (their lm_head dtype), None for fp32 models."""
    dtype = next((p.dtype for n, p in model.named_parameters() if "lm_head" in n), torch.float32)
    return None if dtype == torch.float32 else dtype


@torch.no_grad()
def generate_batch(
    model: torch.nn.Module,
    prompts: PromptBuilder,
    features: Sequence[CompactFeatures],
    languages: Sequence[str | None],
    caps: Sequence[int],
    *,
    device: torch.device,
    min_new_tokens: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> list[Transcript]:
    """Greedy KV-cached generation for clips of one chunk count (so prompts align)."""
    n_chunks = {f.n_chunks for f in features}
    if len(n_chunks) != 1:
        raise ValueError("generate_batch takes clips of one chunk count")
    prompt_rows = [prompts.prompt(features[0].n_chunks, lang) for lang in languages]
    width = max(len(row) for row in prompt_rows)
    input_ids = torch.full((len(features), width), prompts.pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(prompt_rows):  # left-pad: generation appends on the right
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention_mask[row, width - len(ids) :] = 1
    spec = prompts.spec
    input_features = torch.cat([f.expand(spec) for f in features])
    kwargs = {"min_new_tokens": min_new_tokens} if min_new_tokens else {}
    with autocast(device, autocast_dtype):
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            input_features=input_features.to(device, dtype=input_dtype(model)),
            max_new_tokens=max(caps),
            do_sample=False,
            num_beams=1,
            use_cache=True,
            pad_token_id=prompts.pad_id,
            eos_token_id=prompts.eos_id,
            **kwargs,
        )
    results = []
    for row, cap in zip(output[:, width:].tolist(), caps):
        ended = prompts.eos_id in row
        row = row[: row.index(prompts.eos_id)] if ended else row
        truncated = not ended and len(row) >= cap
        row = row[:cap]
        text, language = clean_transcript(prompts.decode(row))
        results.append(Transcript(text, language, len(row), truncated, repetition_loop(text)))
    return results


class _FeatureSource(Dataset):
    """Features of audio items, computed in DataLoader workers; errors come back as values."""

    def __init__(self, items: Sequence[AudioItem], spec: FeatureSpec) -> None:
        self.items = items
        self.spec = spec

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, CompactFeatures | AudioError]:
        try:
            return index, features_for_file(self.items[index].audio, self.spec)
        except AudioError as exc:
            return index, exc


def _collate(batch: list) -> list:
    return batch


def plan_batches(items: Sequence[AudioItem], spec: FeatureSpec, batch_size: int) -> list[list[int]]:
    """Indices grouped by chunk count, longest clips first (an out-of-memory error shows at
    once, not hours in), `batch_size` per batch."""
    chunks = [n_chunks_for(int(item.duration * spec.sampling_rate), spec) for item in items]
    order = sorted(range(len(items)), key=lambda i: (-chunks[i], -items[i].duration))
    batches: list[list[int]] = []
    for index in order:
        last = batches[-1] if batches else None
        if last is None or len(last) >= batch_size or chunks[last[0]] != chunks[index]:
            batches.append([index])
        else:
            last.append(index)
    return batches


class Transcriber:
    """A loaded model + processor that turns audio items into transcripts, batch by batch."""

    def __init__(self, model: torch.nn.Module, processor: Any, device: torch.device) -> None:
        self.model = model
        self.spec = FeatureSpec.from_feature_extractor(processor.feature_extractor)
        self.prompts = PromptBuilder(processor, self.spec)
        self.device = device
        self.autocast_dtype = compute_dtype(model)

    @classmethod
    def load(
        cls,
        model_id: str | Path,
        adapter: Path | None = None,
        *,
        quantization: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
    ) -> Transcriber:
        """Load processor, base model and adapter (quantization as the adapter trained);
        dtype: bf16 | fp16 | fp32, None for the device's default."""
        from transformers import AutoProcessor

        try:
            processor = AutoProcessor.from_pretrained(str(model_id))
        except OSError as exc:
            raise VoxadaptError(f"cannot load the processor of {model_id}: {exc}") from None
        model, _ = load_for_inference(
            model_id, adapter, quantization=quantization, device=device, dtype=resolve_dtype(dtype)
        )
        return cls(model, processor, next(model.parameters()).device)

    def transcribe(
        self, items: Sequence[AudioItem], options: DecodeOptions
    ) -> Iterator[list[tuple[AudioItem, Transcript | AudioError]]]:
        """Yield (item, transcript or error) per finished batch, in batch order."""
        batches = plan_batches(items, self.spec, options.batch_size)
        loader = DataLoader(
            _FeatureSource(items, self.spec),
            batch_sampler=batches,
            collate_fn=_collate,
            num_workers=options.num_workers,
            persistent_workers=False,
        )
        for batch in loader:
            done: list[tuple[AudioItem, Transcript | AudioError]] = []
            by_chunks: dict[int, list[tuple[int, CompactFeatures]]] = {}
            for index, features in batch:
                if isinstance(features, AudioError):
                    done.append((items[index], features))
                else:
                    by_chunks.setdefault(features.n_chunks, []).append((index, features))
            for group in by_chunks.values():
                group_items = [items[i] for i, _ in group]
                languages = [
                    item.language if item.language is not None else options.language
                    for item in group_items
                ]
                caps = [
                    options.max_new_tokens or decode_cap(item.duration, options.tokens_per_s)
                    for item in group_items
                ]
                transcripts = generate_batch(
                    self.model,
                    self.prompts,
                    [f for _, f in group],
                    languages,
                    caps,
                    device=self.device,
                    min_new_tokens=options.min_new_tokens,
                    autocast_dtype=self.autocast_dtype,
                )
                done.extend(zip(group_items, transcripts))
            yield done


# ---------------------------------------------------------------------------- the stage


@dataclass
class TranscribeConfig:
    """Options of `voxadapt transcribe`."""

    inputs: list[Path] = field(default_factory=list)  # audio files, folders, manifests
    model: str = "mistralai/Voxtral-Mini-3B-2507"
    adapter: Path | None = None  # from `voxadapt train` (OUTPUT_DIR/adapter)
    out: Path | None = None  # file (jsonl/txt) or folder (srt); None = stdout
    format: str | None = None  # jsonl | txt | srt; default from --out's suffix, txt on stdout
    quantization: str | None = None  # default: as the adapter trained (nf4 without one)
    dtype: str | None = None
    device: str | None = None
    decode: DecodeOptions = field(default_factory=DecodeOptions)


@dataclass
class TranscribeResult:
    rows: list[dict[str, Any]]  # one per input item, in input order
    n_errors: int
    output: Path | None


def collect_inputs(inputs: Sequence[Path]) -> tuple[list[AudioItem], list[dict[str, Any]]]:
    """Audio items from files, folders (recursively) and JSONL manifests, plus per-file errors.

    Errors (missing file, unreadable audio, bad manifest line) are returned as rows rather
    than raised, so one bad file never stops a batch job.
    """
    items: list[AudioItem] = []
    errors: list[dict[str, Any]] = []
    for path in map(Path, inputs):
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
            )
            if not found:
                errors.append(_error_row(str(path), str(path), "no_audio", "no audio files"))
            for audio in found:
                _add_audio_file(audio, items, errors, ident=str(audio.relative_to(path)))
        elif path.suffix.lower() in {".jsonl", ".json"} and path.is_file():
            for line_no, record in iter_jsonl(path):
                try:
                    utterance = Utterance.from_dict(record)
                except (KeyError, TypeError, ValueError) as exc:
                    where = f"{path}:{line_no}"
                    errors.append(_error_row(where, where, "malformed_record", str(exc)))
                    continue
                items.append(
                    AudioItem(
                        utterance.id,
                        utterance.audio,
                        utterance.duration,
                        record=utterance.to_dict(),
                    )
                )
        else:
            _add_audio_file(path, items, errors, ident=str(path))
    return items, errors


def _error_row(ident: str, audio: str, reason: str, detail: str) -> dict[str, Any]:
    return {"id": ident, "audio": audio, "text": None, "error": reason, "detail": detail}


def _add_audio_file(
    path: Path, items: list[AudioItem], errors: list[dict[str, Any]], *, ident: str
) -> None:
    if not path.exists():
        errors.append(_error_row(ident, str(path), "missing_audio", "no such file"))
        return
    try:
        info = probe_audio(path)
    except AudioError as exc:
        errors.append(_error_row(ident, str(path.resolve()), exc.reason, exc.detail))
        return
    items.append(AudioItem(ident, str(path.resolve()), info.duration))


def transcript_row(item: AudioItem, result: Transcript | AudioError) -> dict[str, Any]:
    """The output record of one item: its manifest fields plus the transcript and flags."""
    row = {**item.record, "id": item.id, "audio": item.audio, "duration": item.duration}
    if isinstance(result, AudioError):
        row.update(text=None, error=result.reason, detail=result.detail)
        return row
    row.update(
        text=result.text,
        n_tokens=result.n_tokens,
        truncated=result.truncated,
        repetition_loop=result.repetition_loop,
    )
    if result.language:
        row["detected_language"] = result.language
    return row


def _srt_time(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{millis:03d}"


def output_format(config: TranscribeConfig) -> str:
    """The format asked for, else guessed from --out (folder -> srt), else txt on stdout."""
    if config.format:
        if config.format not in OUTPUT_FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(OUTPUT_FORMATS)}")
        if config.format == "srt" and config.out is None:
            raise ConfigError("--format srt writes one .srt per clip: give --out FOLDER")
        return config.format
    if config.out is None:
        return "txt"
    suffix = config.out.suffix.lower().lstrip(".")
    return suffix if suffix in OUTPUT_FORMATS else "jsonl"


def write_transcripts(rows: list[dict[str, Any]], fmt: str, out: Path | None) -> None:
    """Write rows as JSONL, `id<TAB>text` lines, or one SRT cue file per clip."""
    if fmt == "srt":
        assert out is not None
        out.mkdir(parents=True, exist_ok=True)
        for row in rows:
            if row.get("text") is None:
                continue
            name = Path(str(row["id"])).with_suffix(".srt").name
            with atomic_write(out / name) as handle:
                end = _srt_time(float(row.get("duration") or 0))
                handle.write(f"1\n00:00:00,000 --> {end}\n{row['text']}\n")
        return
    if fmt == "jsonl":
        lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    else:
        lines = [
            f"{row['id']}\t{row['text']}"
            if row.get("text") is not None
            else f"{row['id']}\t[error: {row['error']}]"
            for row in rows
        ]
    text = "".join(line + "\n" for line in lines)
    if out is None:
        print(text, end="", flush=True)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as handle:
        handle.write(text)


def transcribe(config: TranscribeConfig) -> TranscribeResult:
    """Transcribe every input; bad files are reported in their rows, the rest transcribed."""
    from tqdm import tqdm

    if not config.inputs:
        raise ConfigError("give at least one audio file, folder or manifest")
    fmt = output_format(config)
    items, errors = collect_inputs(config.inputs)
    for row in errors:
        log.warning("%s: %s (%s)", row["id"], row["error"], row["detail"])
    if not items:
        raise VoxadaptError(f"nothing to transcribe: {len(errors)} inputs failed")
    transcriber = Transcriber.load(
        config.model,
        config.adapter,
        quantization=config.quantization,
        device=config.device,
        dtype=config.dtype,
    )
    by_id: dict[int, dict[str, Any]] = {}
    with tqdm(total=len(items), desc="transcribe", unit="clip", disable=None) as progress:
        for batch in transcriber.transcribe(items, config.decode):
            for item, result in batch:
                by_id[id(item)] = transcript_row(item, result)
                if isinstance(result, AudioError):
                    log.warning("%s: %s (%s)", item.id, result.reason, result.detail)
            progress.update(len(batch))
    rows = errors + [by_id[id(item)] for item in items]
    write_transcripts(rows, fmt, config.out)
    n_errors = sum(1 for row in rows if row.get("text") is None)
    return TranscribeResult(rows, n_errors, config.out)
