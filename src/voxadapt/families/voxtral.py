"""Mistral's Voxtral (Mini 3B, Small 24B): Whisper-style encoder, 30 s chunks, Tekken tokens.

The prompt `[BOS][INST][BEGIN_AUDIO][AUDIO]x375*chunks[/INST]lang:xx[TRANSCRIBE]` depends only
on the number of 30 s chunks and the language, so it is built once per pair by mistral-common's
own `encode_transcription` (the code the processor uses) and reused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from voxadapt.families.base import KnownModel, ModelFamily, Prompts
from voxadapt.features import CHUNKED, CompactFeatures, FeatureSpec

# Voxtral sometimes writes the language tag of its prompt ("lang:ko") into the transcript.
_LANG_PREFIX = re.compile(r"^\s*lang:\s*([A-Za-z]{2,3})\b[\s:]*")


def clean_transcript(text: str) -> tuple[str, str | None]:
    """Strip a leaked `lang:xx` prefix; return the text and the language it named."""
    match = _LANG_PREFIX.match(text)
    if not match:
        return text.strip(), None
    return text[match.end() :].strip(), match.group(1).lower()


class VoxtralPrompts(Prompts):
    """Token ids of Voxtral's transcription prompt and of transcript targets."""

    def __init__(self, processor: Any, spec: FeatureSpec) -> None:
        self.mistral = processor.tokenizer.tokenizer  # mistral_common MistralTokenizer
        self.tekken = self.mistral.instruct_tokenizer.tokenizer
        self.spec = spec
        self.eos_id = int(self.tekken.eos_id)
        self.stop_ids = (self.eos_id,)
        self.bos_id = int(self.tekken.bos_id)
        self.pad_id = int(self.tekken.pad_id)
        self.audio_token_id = int(self.tekken.get_special_token("[AUDIO]"))
        self._prompts: dict[tuple[int, str | None], list[int]] = {}

    def prompt_for(
        self, features: CompactFeatures, language: str | None, context: str | None = None
    ) -> list[int]:
        if context:
            raise ValueError("Voxtral's transcription request has no context prompt")
        return self.prompt(features.n_chunks, language)

    def prompt(self, n_chunks: int, language: str | None) -> list[int]:
        """Prompt ids for audio spanning `n_chunks` chunks; language None = auto-detect."""
        import numpy as np

        key = (n_chunks, language)
        if key not in self._prompts:
            from mistral_common.protocol.transcription.request import TranscriptionRequest
            from mistral_common.tokens.tokenizers.audio import Audio

            silence = Audio(
                audio_array=np.zeros(n_chunks * self.spec.chunk_samples, dtype=np.float32),
                sampling_rate=self.spec.sampling_rate,
                format="wav",
            )
            try:  # mistral-common >= 1.13 takes base64 audio directly
                request = TranscriptionRequest(
                    model="voxtral", audio=silence.to_base64("wav"), language=language
                )
            except (ValueError, TypeError):  # older releases want RawAudio
                from mistral_common.protocol.instruct.chunk import RawAudio

                request = TranscriptionRequest(
                    model="voxtral", language=language, audio=RawAudio.from_audio(silence)
                )
            self._prompts[key] = list(self.mistral.encode_transcription(request).tokens)
        return self._prompts[key]

    def target(self, text: str, detected_language: str | None = None) -> list[int]:
        # Voxtral writes no language before the transcript, prompted or not
        return [*self.tekken.encode(text, bos=False, eos=False), self.eos_id]

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids, special tokens dropped."""
        from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy

        return self.tekken.decode(ids, special_token_policy=SpecialTokenPolicy.IGNORE)

    def transcript(self, ids: list[int]) -> tuple[str, str | None]:
        return clean_transcript(self.decode(ids))

    def token_bytes(self, token_id: int) -> bytes:
        return self.tekken.id_to_byte_piece(token_id)


class VoxtralFamily(ModelFamily):
    def feature_spec(self, extractor: Any) -> FeatureSpec:
        return FeatureSpec.from_feature_extractor(extractor, layout=CHUNKED)

    def _prompts(self, processor: Any, spec: FeatureSpec) -> Prompts:
        return VoxtralPrompts(processor, spec)

    def build_tiny(self, out_dir: Path, *, seed: int = 0) -> Path:
        from voxadapt.tiny import build_tiny_voxtral

        return build_tiny_voxtral(out_dir, seed=seed)


VOXTRAL = VoxtralFamily(
    name="voxtral",
    title="Voxtral",
    model_type="voxtral",
    architecture="VoxtralForConditionalGeneration",
    default_model="mistralai/Voxtral-Mini-3B-2507",
    known_models=(
        KnownModel("mistralai/Voxtral-Mini-3B-2507", "3B", "NF4 fits in 8 GB"),
        KnownModel("mistralai/Voxtral-Small-24B-2507", "24B", "NF4 needs ~20 GB"),
    ),
    # the model card's list; Korean is not on it (a `ko` prompt is accepted, untrained)
    languages=("en", "es", "fr", "pt", "hi", "de", "nl", "it"),
    export_formats=("hf", "mistral"),
    # LoRA on every attention and MLP projection of the language model, as QLoRA recipes do
    # (Dettmers et al. 2023 found LoRA on all linear layers needed to match full fine-tuning)
    llm_lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    # the Whisper-style encoder's attention and MLP projections
    encoder_lora_targets=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
)
