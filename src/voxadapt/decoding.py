"""The one decoding engine: options, batching plan, batched KV-cached greedy generation, guards.

`transcribe`, `evaluate` and training's evaluation all decode through `Transcriber`, so the
transcripts that select the best checkpoint are produced exactly as `voxadapt evaluate`
produces them. Prompts, targets and the text of generated ids come from the model's family
(`voxadapt.families`). Clips are grouped by chunk count and sorted by duration: for Voxtral the
prompt depends only on (number of 30 s chunks, language), so a batch's prompts have equal
length and no padding enters the decoder; Qwen3-ASR's prompts follow each clip's length and
are left-padded under the attention mask. Features come from a pluggable source (audio files, or the
feature cache) computed in DataLoader workers while the model decodes. Term biasing lives in
`voxadapt.biasing`, long recordings' segmenting and stitching in `voxadapt.longform`.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxadapt.adapters import check_base_model, load_for_inference, read_adapter_info
from voxadapt.audio import AudioError
from voxadapt.biasing import MAX_BIAS_WEIGHT, LogprobRecorder, TermBias
from voxadapt.config import Config, option
from voxadapt.data import AUTO_LANGUAGE, MANIFEST_LANGUAGE, prompt_language
from voxadapt.errors import ConfigError
from voxadapt.families import FAMILIES, ModelFamily, Prompts, family_of, load_frontend
from voxadapt.features import (
    CacheEntryError,
    CompactFeatures,
    FeatureSpec,
    FeatureStore,
    audio_inputs,
    cache_key,
    features_for_file,
    n_chunks_for,
)
from voxadapt.manifest import Utterance, language_problem
from voxadapt.model import (
    DTYPES,
    QUANTIZATIONS,
    autocast,
    check_device,
    compute_dtype,
    input_dtype,
    resolve_dtype,
)
from voxadapt.text import read_term_lines, repetition_loop

if TYPE_CHECKING:
    import torch

if TYPE_CHECKING:
    from voxadapt.alignment import Aligner

log = logging.getLogger(__name__)


@dataclass
class DecodeOptions(Config):
    """How transcripts are generated (the `decode:` section of train/evaluate/transcribe)."""

    batch_size: int = option(16, help="clips per decoding batch", group="decoding")
    language: str = option(
        "ko",
        help="prompt language: an ISO 639-1 code, 'auto' (the model detects it) or "
        "'manifest' (each record's language)",
        group="decoding",
        shared=True,
    )
    tokens_per_s: float = option(
        15.0,
        help="runaway cap: at most 20 + this x clip seconds new tokens",
        flag="--tokens-per-second",
        group="decoding",
    )
    max_new_tokens: int | None = option(
        None, help="fixed cap on new tokens instead of the duration-based one", group="decoding"
    )
    min_new_tokens: int | None = option(
        None, help="force at least N new tokens (benchmarks)", group="decoding"
    )
    num_workers: int = option(
        2, help="feature-computing worker processes", flag="--workers", group="decoding"
    )
    bias_terms: Path | None = option(
        None,
        help="terms to favour while decoding, one per line, spellings as CT|씨티 (as in "
        "evaluate --terms); see --bias-weight",
        metavar="FILE",
        group="decoding",
    )
    bias_weight: float = option(
        0.0,
        help="logit bonus per token that continues a bias term (shallow fusion; 0 = none)",
        group="decoding",
    )
    vad: bool = option(
        True,
        help="long-form mode: split files longer than --long-form-threshold at pauses "
        "(voice-activity detection) and decode the segments in batches; --no-vad decodes "
        "them in one pass",
        group="long recordings",
    )
    context: str | None = option(
        None,
        help="context prompt for bases that take one (Qwen3-ASR's system prompt: the topic, "
        "terms, names, e.g. '내과 외래 진료: 고혈압, 메트포르민'); Voxtral has none",
        metavar="TEXT",
        group="decoding",
    )
    long_form_threshold_s: float = option(
        30.0,
        help="files longer than this many seconds are long-form",
        flag="--long-form-threshold",
        metavar="S",
        group="long recordings",
    )

    def problems(self) -> list[str]:
        found = super().problems()
        if self.batch_size < 1:
            found.append("batch_size must be >= 1")
        if not self.tokens_per_s > 0:
            found.append("tokens_per_s must be > 0")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            found.append("max_new_tokens must be >= 1")
        if self.min_new_tokens is not None and self.min_new_tokens < 1:
            found.append("min_new_tokens must be >= 1")
        if (
            self.min_new_tokens is not None
            and self.max_new_tokens is not None
            and self.min_new_tokens > self.max_new_tokens
        ):
            found.append("min_new_tokens must be <= max_new_tokens")
        if self.num_workers < 0:
            found.append("num_workers must be >= 0")
        # float32 logits: a bonus beyond ~1e38 overflows to inf (every term forced)
        if not (math.isfinite(self.bias_weight) and 0 <= self.bias_weight <= MAX_BIAS_WEIGHT):
            found.append(f"bias_weight must be a number in [0, {MAX_BIAS_WEIGHT:g}]")
        if not (math.isfinite(self.long_form_threshold_s) and self.long_form_threshold_s > 0):
            found.append("long_form_threshold_s must be > 0")
        if self.bias_terms is not None:
            try:  # read now: a bad file must not wait until the model has loaded
                read_term_lines(self.bias_terms)
            except ConfigError as exc:
                found.append(f"bias_terms: {exc}")
        # any family's code (Qwen3-ASR forces yue, fil); the model's family is checked once
        # it is known (`family_problems`)
        if self.language not in (AUTO_LANGUAGE, MANIFEST_LANGUAGE) and all(
            f.language_problem(self.language) for f in FAMILIES.values()
        ):
            found.append(language_problem(self.language) + ", 'auto' or 'manifest'")
        return found

    def family_problems(self, family: ModelFamily) -> list[str]:
        """What these options ask of a model of `family` that it cannot do."""
        found = []
        if self.context and not family.takes_context:
            found.append(
                f"--context: {family.title} has no context prompt (its transcription request "
                "takes none); use --bias-terms to favour terms"
            )
        if self.language not in (AUTO_LANGUAGE, MANIFEST_LANGUAGE):
            problem = family.language_problem(self.language)
            if problem:
                found.append(f"--language: {problem}")
        return found

    def prompt_language(self, item_language: str | None = None) -> str | None:
        """The language written into an item's prompt (None: the model detects it)."""
        return prompt_language(self.language, item_language)

    def cap(self, duration_s: float) -> int:
        """max_new_tokens for a clip: fixed, or generous enough never to cut real text."""
        return self.max_new_tokens or decode_cap(duration_s, self.tokens_per_s)


@dataclass
class Transcript:
    """The model's output for one clip, cleaned and checked."""

    text: str
    language: str | None  # language named by a leaked prefix, if any
    n_tokens: int
    truncated: bool  # hit max_new_tokens before EOS
    repetition_loop: str | None  # repeated unit of a detected loop
    token_ids: list[int] = field(default_factory=list)  # generated ids, stop token excluded
    # log-probability of each generated id under the scores it was chosen from (after term
    # biasing: what the decoder acted on)
    token_logprobs: list[float] = field(default_factory=list)
    prompt_tokens: int = 0  # the prompt's length (audio placeholders included)
    audio_tokens: int = 0  # audio placeholders in the prompt


@dataclass
class AudioItem:
    """One clip to transcribe."""

    id: str
    audio: str
    duration: float  # seconds (header estimate; chunking uses the decoded length)
    language: str | None = None  # the record's language (used when language = manifest)
    record: dict[str, Any] = field(default_factory=dict)  # fields carried to the output
    offset: float | None = None  # a segment of `audio` starting here (duration = `duration`)
    named_file: bool = False  # given by name (not found in a folder): outputs take its stem

    @classmethod
    def from_utterance(cls, utterance: Utterance) -> AudioItem:
        """A manifest record as a decoding item (the record travels to the output row)."""
        return cls(
            utterance.id,
            utterance.audio,
            utterance.duration,
            language=utterance.language,
            record=utterance.to_dict(),
            offset=utterance.offset,
        )


def decode_cap(duration_s: float, tokens_per_s: float) -> int:
    """Generous max_new_tokens for a clip: stops runaway loops without cutting real text."""
    return int(20 + tokens_per_s * duration_s)


def generate_batch(
    model: torch.nn.Module,
    prompts: Prompts,
    features: Sequence[CompactFeatures],
    languages: Sequence[str | None],
    caps: Sequence[int],
    *,
    device: torch.device,
    min_new_tokens: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    on_token: Callable[[], None] | None = None,
    bias: TermBias | None = None,
    context: str | None = None,
    watch: Callable[[list[list[int]]], Sequence[bool] | None] | None = None,
    logprobs: bool = False,
) -> list[Transcript]:
    """Greedy KV-cached generation for clips of one chunk count (so Voxtral's prompts
    align); `on_token` is called after every generation step (progress on long clips);
    `context` is the family's context prompt (Qwen3-ASR: terms, names), if it has one;
    `watch` sees every row's generated ids after each step (streaming) and may return a
    flag per row to stop it (a client that went away); `logprobs` records each generated
    token's log-probability (a softmax over the vocabulary per step: on a small model that
    costs as much as the step itself, so only when asked)."""
    import torch

    n_chunks = {f.n_chunks for f in features}
    if len(n_chunks) != 1:
        raise ValueError("generate_batch takes clips of one chunk count")
    prompt_rows = [prompts.prompt_for(f, lang, context) for f, lang in zip(features, languages)]
    width = max(len(row) for row in prompt_rows)
    input_ids = torch.full((len(features), width), prompts.pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(prompt_rows):  # left-pad: generation appends on the right
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention_mask[row, width - len(ids) :] = 1
    audio = audio_inputs(features, prompts.spec)
    audio["input_features"] = audio["input_features"].to(device, dtype=input_dtype(model))
    audio = {name: tensor.to(device) for name, tensor in audio.items()}
    kwargs: dict[str, Any] = {"min_new_tokens": min_new_tokens} if min_new_tokens else {}
    if on_token is not None or watch is not None:
        from transformers import StoppingCriteriaList

        kwargs["stopping_criteria"] = StoppingCriteriaList([_StepCallback(on_token, watch, width)])
    from transformers import LogitsProcessorList

    recorder = LogprobRecorder()  # last: it sees the scores the greedy choice is made from
    processors = [bias.processor(width)] if bias is not None else []
    if logprobs:
        processors.append(recorder)
    if processors:
        kwargs["logits_processor"] = LogitsProcessorList(processors)
    with torch.no_grad(), autocast(device, autocast_dtype):
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            **audio,
            max_new_tokens=max(caps),
            do_sample=False,
            num_beams=1,
            use_cache=True,
            pad_token_id=prompts.pad_id,
            eos_token_id=prompts.eos_id if len(prompts.stop_ids) == 1 else list(prompts.stop_ids),
            **kwargs,
        )
    scored = recorder.rows()
    audio_id = prompts.audio_token_id
    results = []
    for index, (row, cap) in enumerate(zip(output[:, width:].tolist(), caps)):
        end = next((i for i, token in enumerate(row) if token in prompts.stop_ids), None)
        ended = end is not None
        row = row[:end] if ended else row
        # a clip batched with longer ones may run past its own cap before its EOS
        truncated = len(row) > cap or (not ended and len(row) >= cap)
        row = row[:cap]
        text, language = prompts.transcript(row)
        transcript = Transcript(text, language, len(row), truncated, repetition_loop(text))
        transcript.token_ids = row
        transcript.token_logprobs = scored[index][: len(row)] if scored else []
        transcript.prompt_tokens = len(prompt_rows[index])
        transcript.audio_tokens = prompt_rows[index].count(audio_id)
        results.append(transcript)
    return results


class _StepCallback:
    """A stopping criterion that reports each generation step (`on_token`) and shows the
    rows generated so far to `watch`, which may stop rows (the others go on)."""

    def __init__(
        self,
        on_token: Callable[[], None] | None,
        watch: Callable[[list[list[int]]], Sequence[bool] | None] | None,
        prompt_width: int,
    ) -> None:
        self.on_token, self.watch, self.prompt_width = on_token, watch, prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        import torch

        if self.on_token is not None:
            self.on_token()
        stop = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if self.watch is not None:
            flags = self.watch(input_ids[:, self.prompt_width :].tolist())
            if flags is not None and any(flags):
                stop |= torch.tensor(list(flags), dtype=torch.bool, device=input_ids.device)
        return stop


class FeatureSource:
    """Features of audio items, by index: from the feature cache where it holds the clip,
    else computed from the audio file. Errors come back as values, so one unreadable file
    never stops a DataLoader.

    A map-style dataset (a DataLoader needs only `__len__` and `__getitem__`), not a
    `torch.utils.data.Dataset` subclass, so that importing this module never imports torch.
    """

    def __init__(
        self,
        items: Sequence[AudioItem],
        spec: FeatureSpec,
        *,
        store: FeatureStore | None = None,
        keys: Sequence[str | None] | None = None,
    ) -> None:
        self.items = items
        self.spec = spec
        self.store = store
        if store is not None and keys is None:
            keys = [self._key(item) for item in items]
        self.keys = list(keys) if keys is not None else [None] * len(items)

    def _key(self, item: AudioItem) -> str | None:
        segment = None if item.offset is None else (item.offset, item.duration)
        try:
            return cache_key(item.id, item.audio, self.spec, segment=segment)
        except OSError:  # a missing file: reported when its features are computed
            return None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, CompactFeatures | AudioError]:
        key, item = self.keys[index], self.items[index]
        if self.store is not None and key is not None and key in self.store:
            try:
                return index, self.store.get(key)
            except CacheEntryError as exc:
                log.warning("utterance %s: %s; using the audio file instead", item.id, exc)
        duration = item.duration if item.offset is not None else None
        try:
            features = features_for_file(
                item.audio, self.spec, offset=item.offset, duration=duration
            )
            return index, features
        except AudioError as exc:
            return index, exc


def ignore_stop_signals(_: int = 0) -> None:
    """DataLoader worker init: Ctrl-C/SIGTERM reach the whole process group, but only the
    main process handles them (it stops the workers); a worker dying of them would turn a
    clean interrupt into 'DataLoader worker exited unexpectedly'."""
    import signal

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


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


@dataclass
class ModelChoice(Config):
    """The model options of the decoding stages (transcribe, evaluate): which base model,
    which adapter, and how to load them."""

    model: str | None = option(
        None,
        model_reference=True,
        help="base model, Voxtral or Qwen3-ASR: hub id or folder (default: the adapter's base "
        "model, else mistralai/Voxtral-Mini-3B-2507)",
        group="model",
    )
    adapter: Path | None = option(
        None,
        help="adapter from `voxadapt train` (OUTPUT_DIR/adapter); none: the base model",
        metavar="DIR",
        group="model",
    )
    quantization: str | None = option(
        None,
        help="LLM weights (default: as the adapter was trained; nf4 without one)",
        choices=QUANTIZATIONS,
        group="model",
    )
    dtype: str | None = option(
        None,
        help="compute dtype (default bf16 on GPU, fp32 on CPU)",
        choices=tuple(DTYPES),
        group="model",
    )
    device: str | None = option(
        None, help="cpu, cuda, cuda:1 ... (default: cuda if available)", group="model"
    )
    force: bool = option(
        False,
        help="use --adapter with a --model other than the base it was trained on",
        group="model",
    )
    aligner: str | None = option(
        None,
        help="word timestamps: Qwen3 forced aligner, hub id (Qwen/Qwen3-ForcedAligner-0.6B-hf) "
        "or folder",
        metavar="MODEL",
        group="model",
    )

    def problems(self) -> list[str]:
        found = super().problems() + check_device(self.device)
        if self.aligner is not None:
            from voxadapt.alignment import AlignmentError, check_aligner, language_problem

            try:  # a missing folder or another model must not wait until decoding is done
                check_aligner(self.aligner)
            except AlignmentError as exc:
                found.append(str(exc))
            decode = getattr(self, "decode", None)
            language = getattr(decode, "language", None)
            if language not in (None, AUTO_LANGUAGE, MANIFEST_LANGUAGE):
                problem = language_problem(language)
                if problem:
                    found.append(f"--aligner: {problem}")
        return found

    def check_adapter_base(self) -> None:
        """ModelError if --adapter was trained on another base than --model, ConfigError if
        the decoding options ask what the model's family cannot do (before any weights
        load)."""
        if self.adapter is not None and self.model is not None:
            info = read_adapter_info(self.adapter)
            check_base_model(str(self.model), info, force=self.force)
        decode = getattr(self, "decode", None)
        if self.model is not None and isinstance(decode, DecodeOptions):
            problems = decode.family_problems(family_of(self.model))
            if problems:
                raise ConfigError("; ".join(problems), problems)

    def load_transcriber(self) -> Transcriber:
        """The model and adapter these options name, ready to decode (stages call
        `check_adapter_base` first, before any other work)."""
        return Transcriber.load(
            self.model,
            self.adapter,
            quantization=self.quantization,
            device=self.device,
            dtype=self.dtype,
        )

    def load_aligner(self) -> Aligner | None:
        """The forced aligner of --aligner on the same device and dtype (None: no word
        timestamps)."""
        if self.aligner is None:
            return None
        from voxadapt.alignment import Aligner

        return Aligner.load(self.aligner, device=self.device, dtype=self.dtype)


class Transcriber:
    """A loaded model + prompt builder that turns audio items into transcripts, batch by batch."""

    def __init__(self, model: torch.nn.Module, prompts: Prompts, device: torch.device) -> None:
        self.model = model
        self.prompts = prompts
        self.spec = prompts.spec
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
        frontend = load_frontend(model_id)
        model, _ = load_for_inference(
            model_id, adapter, quantization=quantization, device=device, dtype=resolve_dtype(dtype)
        )
        return cls(model, frontend.prompts, next(model.parameters()).device)

    def add_adapter(self, name: str, adapter_dir: Path) -> None:
        """Load another PEFT adapter beside the loaded one(s): several adapters of one base
        served from one copy of its weights (`use_adapter` picks one per batch)."""
        from voxadapt.adapters import apply_adapter, is_peft_adapter

        if not is_peft_adapter(read_adapter_info(adapter_dir)) or not hasattr(
            self.model, "set_adapter"
        ):
            raise ConfigError(
                f"{adapter_dir}: only LoRA adapters can be served side by side (a full-"
                "projector adapter replaces the base's weights); serve it alone"
            )
        self.model = apply_adapter(self.model, adapter_dir, name)
        self.model.eval()

    def use_adapter(self, name: str) -> None:
        """Decode with the adapter loaded under `name` (see `add_adapter`)."""
        if getattr(self.model, "active_adapter", name) != name:
            self.model.set_adapter(name)

    def transcribe(
        self,
        items: Sequence[AudioItem],
        options: DecodeOptions,
        features: FeatureSource | None = None,
        on_token: Callable[[], None] | None = None,
        bias: TermBias | None = None,
        watch: Callable[[Sequence[AudioItem], list[list[int]]], Sequence[bool] | None]
        | None = None,
        logprobs: bool = False,
    ) -> Iterator[list[tuple[AudioItem, Transcript | AudioError]]]:
        """Yield (item, transcript or error) per finished batch, in batch order.

        `features` defaults to computing them from the items' audio files; `on_token` is
        called after every generation step; `bias` replaces the bias of
        `options.bias_terms` (the server's terms plus a request's hotwords); `watch` sees
        the items being decoded and their generated ids after every step (streaming) and
        may stop some (see `generate_batch`); `logprobs`: record token log-probabilities.
        """
        from torch.utils.data import DataLoader

        family = self.prompts.family
        problems = options.family_problems(family)
        for item in items:  # --language manifest: each record's own language
            language = options.prompt_language(item.language)
            problem = language and family.language_problem(language)
            if problem:
                problems.append(f"{item.id}: {problem}")
                break
        if problems:
            raise ConfigError("; ".join(problems), problems)
        batches = plan_batches(items, self.spec, options.batch_size)
        loader = DataLoader(
            features if features is not None else FeatureSource(items, self.spec),
            batch_sampler=batches,
            collate_fn=_collate,
            num_workers=options.num_workers,
            worker_init_fn=ignore_stop_signals if options.num_workers else None,
            persistent_workers=False,
        )
        was_training = self.model.training
        self.model.eval()
        try:
            for batch in loader:
                yield self._decode_batch(items, batch, options, on_token, bias, watch, logprobs)
        finally:
            self.model.train(was_training)

    def _bias(self, options: DecodeOptions) -> TermBias | None:
        if options.bias_terms is None:
            return None
        cached = getattr(self, "_bias_cache", None)
        key = (str(options.bias_terms), options.bias_weight)
        if cached is None or cached[0] != key:
            bias = TermBias.from_file(options.bias_terms, self.prompts, options.bias_weight)
            self._bias_cache = (key, bias)
        return self._bias_cache[1]

    def _decode_batch(
        self,
        items: Sequence[AudioItem],
        batch: list[tuple[int, CompactFeatures | AudioError]],
        options: DecodeOptions,
        on_token: Callable[[], None] | None = None,
        bias: TermBias | None = None,
        watch: Callable[[Sequence[AudioItem], list[list[int]]], Sequence[bool] | None]
        | None = None,
        logprobs: bool = False,
    ) -> list[tuple[AudioItem, Transcript | AudioError]]:
        done: list[tuple[AudioItem, Transcript | AudioError]] = []
        bias = bias or self._bias(options)
        by_chunks: dict[int, list[tuple[int, CompactFeatures]]] = {}
        for index, features in batch:
            if isinstance(features, AudioError):
                done.append((items[index], features))
            else:
                by_chunks.setdefault(features.n_chunks, []).append((index, features))
        for group in by_chunks.values():
            group_items = [items[i] for i, _ in group]
            transcripts = generate_batch(
                self.model,
                self.prompts,
                [f for _, f in group],
                [options.prompt_language(item.language) for item in group_items],
                [options.cap(item.duration) for item in group_items],
                device=self.device,
                min_new_tokens=options.min_new_tokens,
                autocast_dtype=self.autocast_dtype,
                on_token=on_token,
                bias=bias,
                context=options.context,
                watch=functools.partial(watch, group_items) if watch is not None else None,
                logprobs=logprobs,
            )
            done.extend(zip(group_items, transcripts))
        return done
