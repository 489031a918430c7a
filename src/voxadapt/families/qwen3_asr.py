"""Qwen3-ASR (0.6B, 1.7B): an AuT encoder over the clip's own frames (with a mask), a two-layer
projector and a Qwen3 LLM, prompted through a ChatML template.

The prompt is the processor's `apply_transcription_request`: an optional system message (the
context: terms, names), the user turn holding `<|audio_start|><|audio_pad|>xN<|audio_end|>`,
and the assistant turn, prefilled with `language Korean<asr_text>` when the language is
forced. N depends only on the clip's frame count, so prompts are built by the processor
itself once per (N, language, context) and reused. Unforced, the model writes
`language X<asr_text>` itself; the transcript is what follows `<asr_text>` and X becomes
the detected language. Targets are the transcript and `<|im_end|>` only (the processor's own
`output_labels` would put the whole prompt in the loss), and never depend on the pad token
(the released config sets pad = `<|im_end|>`, which a pad-based mask would hide).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voxadapt.errors import VoxadaptError
from voxadapt.families.base import KnownModel, ModelFamily, Prompts
from voxadapt.features import MASKED, CompactFeatures, FeatureSpec

ASR_ARCHITECTURE = "Qwen3ASRForConditionalGeneration"
ALIGNER_ARCHITECTURE = "Qwen3ASRForTokenClassification"
# The codes transformers' processor can force (processing_qwen3_asr.LANGUAGE_CODE_TO_NAME;
# the model card counts 52 languages and dialects, the rest are detected only).
LANGUAGES = (
    "ar", "yue", "zh", "cs", "da", "nl", "en", "fil", "fi", "fr", "de", "el", "hi", "hu", "id",
    "it", "ja", "ko", "mk", "ms", "fa", "pl", "pt", "ro", "ru", "es", "sv", "th", "tr", "vi",
)  # fmt: skip
_ASR_TEXT = "<asr_text>"
_HEADER = "language "
_IM_END = "<|im_end|>"
_END_OF_TEXT = "<|endoftext|>"


def _language_names() -> dict[str, str]:
    from transformers.models.qwen3_asr.processing_qwen3_asr import LANGUAGE_CODE_TO_NAME

    return dict(LANGUAGE_CODE_TO_NAME)


class Qwen3ASRPrompts(Prompts):
    """Token ids of Qwen3-ASR's transcription prompt and of transcript targets."""

    takes_context = True

    def __init__(self, processor: Any, spec: FeatureSpec) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.spec = spec
        self.eos_id = int(self.tokenizer.convert_tokens_to_ids(_IM_END))
        end_of_text = int(self.tokenizer.convert_tokens_to_ids(_END_OF_TEXT))
        self.stop_ids = (self.eos_id, end_of_text)
        # padding only fills attention-masked positions; <|endoftext|> as the tokenizer has it
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else end_of_text)
        self.audio_token_id = int(processor.audio_token_id)
        self.asr_text_id = int(self.tokenizer.convert_tokens_to_ids(_ASR_TEXT))
        self.names = _language_names()
        self.codes = {name.lower(): code for code, name in self.names.items()}
        self._prompts: dict[tuple[int, str | None, str | None], list[int]] = {}
        self._byte_of: dict[str, int] | None = None

    def n_audio_tokens(self, n_frames: int) -> int:
        """Audio placeholders for a clip of `n_frames` mel frames (the processor's count)."""
        import torch

        return int(self.processor._get_audio_token_length(torch.tensor([n_frames]))[0])

    def prompt_for(
        self, features: CompactFeatures, language: str | None, context: str | None = None
    ) -> list[int]:
        import numpy as np

        key = (self.n_audio_tokens(features.n_frames), language, context or None)
        if key not in self._prompts:
            problem = language and self.family.language_problem(language)
            if problem:  # checked earlier by every stage; a library caller gets one line too
                raise VoxadaptError(problem)
            # silence of the clip's length gives the clip's placeholder count
            silence = np.zeros(features.n_frames * self.spec.hop_length, dtype=np.float32)
            inputs = self.processor.apply_transcription_request(
                audio=silence,
                language=language,
                prompt=context or None,
                processor_kwargs={"sampling_rate": self.spec.sampling_rate},
            )
            self._prompts[key] = inputs["input_ids"][0].tolist()
        return self._prompts[key]

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def target(self, text: str, detected_language: str | None = None) -> list[int]:
        ids = self._encode(text)
        if detected_language is not None:
            name = self.names.get(detected_language, detected_language)
            ids = [*self._encode(f"language {name}"), self.asr_text_id, *ids]
        return [*ids, self.eos_id]

    def text_tokens(self, text: str) -> list[int]:
        return self._encode(text)

    def transcript(self, ids: list[int]) -> tuple[str, str | None]:
        language = None
        if self.asr_text_id in ids:  # unforced: "language Korean<asr_text>..."
            cut = ids.index(self.asr_text_id)
            header = self.tokenizer.decode(ids[:cut], skip_special_tokens=True).strip()
            ids = ids[cut + 1 :]
            if header.lower().startswith("language "):
                name = header[len("language ") :].strip().lower()
                language = self.codes.get(name, name or None)
                language = None if language == "none" else language
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return text.replace(_ASR_TEXT, "").strip(), language

    def partial_text(self, ids: list[int]) -> str | None:
        if self.asr_text_id in ids:
            return self.transcript(ids)[0]
        # unforced, the model writes "language Korean<asr_text>" first; a forced prompt
        # ends with <asr_text> and what follows is transcript (never "language ...")
        head = self.tokenizer.decode(ids, skip_special_tokens=True).lstrip()
        if head.startswith(_HEADER[: len(head)]) or head.startswith(_HEADER):
            return None
        return self.transcript(ids)[0]

    def text_start(self, ids: list[int]) -> int:
        return ids.index(self.asr_text_id) + 1 if self.asr_text_id in ids else 0

    def token_bytes(self, token_id: int) -> bytes:
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        if self._byte_of is None:  # byte-level BPE: each byte is written as one character
            self._byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
        token = self.tokenizer.convert_ids_to_tokens(token_id)
        if token_id in self.tokenizer.all_special_ids or any(c not in self._byte_of for c in token):
            return token.encode("utf-8")
        return bytes(self._byte_of[char] for char in token)


class Qwen3ASRFamily(ModelFamily):
    def config_problem(self, config: Any) -> str | None:
        # transformers accepts the original repos' config (widths under thinker_config)
        # without a word and builds default widths that the weights do not fill
        if getattr(config, "thinker_config", None) is not None:
            return (
                "this is the original qwen_asr layout (thinker_config), which transformers "
                "loads with wrong widths: use the converted checkpoint, e.g. "
                "Qwen/Qwen3-ASR-1.7B-hf or Qwen/Qwen3-ASR-0.6B-hf"
            )
        return None

    def feature_spec(self, extractor: Any) -> FeatureSpec:
        # the encoder takes chunks of 2 * n_window frames; clips under min_length samples
        # (0.5 s) are zero-padded to it, unmasked, as the original library does
        return FeatureSpec.from_feature_extractor(
            extractor,
            layout=MASKED,
            min_samples=int(getattr(extractor, "min_length", 0) or 0),
            frame_multiple=2 * int(getattr(extractor, "n_window", 50)),
        )

    def _prompts(self, processor: Any, spec: FeatureSpec) -> Prompts:
        return Qwen3ASRPrompts(processor, spec)

    def build_tiny(self, out_dir: Path, *, seed: int = 0) -> Path:
        from voxadapt.families.qwen3_asr_checkpoint import build_tiny_qwen3_asr

        return build_tiny_qwen3_asr(out_dir, seed=seed)


QWEN3_ASR = Qwen3ASRFamily(
    name="qwen3_asr",
    title="Qwen3-ASR",
    model_type="qwen3_asr",
    architecture=ASR_ARCHITECTURE,
    # transformers loads the converted `-hf` repositories; the original ones hold the
    # qwen_asr package's layout (refused in `config_problem`)
    default_model="Qwen/Qwen3-ASR-1.7B-hf",
    known_models=(
        KnownModel("Qwen/Qwen3-ASR-0.6B-hf", "0.6B", "0.78B parameters; bf16 ~1.9 GB"),
        KnownModel("Qwen/Qwen3-ASR-1.7B-hf", "1.7B", "2.0B parameters; bf16 ~4.7 GB"),
    ),
    languages=LANGUAGES,
    export_formats=("hf",),  # Mistral's consolidated format holds Voxtral only
    llm_lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    encoder_lora_targets=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
    refused_architectures={
        ALIGNER_ARCHITECTURE: (
            "a Qwen3 forced aligner (Qwen3ASRForTokenClassification), not a speech recognizer: "
            "it aligns transcripts to audio; give a Qwen3-ASR model such as Qwen/Qwen3-ASR-1.7B-hf"
        )
    },
    prompt_languages=LANGUAGES,
    takes_context=True,
)
