"""What a model family is: the one object per family that says how its models differ.

Shared code asks the family (by way of `voxadapt.families.family_of`) and never branches on
its name: features (`feature_spec`), prompts and targets (`prompts`), which languages it can
be told to transcribe, its default LoRA targets per part, the export formats it supports and
a tiny random builder for tests and `voxadapt demo`. The module paths of encoder, projector
and LLM are the same in every supported family (`audio_tower`, `multi_modal_projector`,
`language_model`), so `voxadapt.model` finds the parts by name inside any of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxadapt.errors import ModelError, VoxadaptError
from voxadapt.features import CompactFeatures, FeatureSpec

if TYPE_CHECKING:
    import torch


class FamilyError(ModelError):
    """A model that no supported family can use (another model type, a forced aligner
    where a recognizer is needed, a folder without a config)."""


@dataclass(frozen=True)
class KnownModel:
    """A released checkpoint of a family, for help texts, `doctor` and the README."""

    hub_id: str
    parameters: str  # e.g. "3B"
    note: str = ""


class Prompts:
    """Token ids of a family's transcription prompt and transcript targets, and the text of
    generated ids. Built from the model's own processor, so prompts equal the reference
    implementation's (tested per family)."""

    family: ModelFamily  # set by `ModelFamily.prompts`
    spec: FeatureSpec
    pad_id: int
    eos_id: int  # the end token a target ends with
    stop_ids: tuple[int, ...]  # generation stops at any of these
    audio_token_id: int  # the audio placeholder in prompts
    takes_context: bool = False  # a free-text context prompt (terms, names) is part of it

    def prompt_for(
        self, features: CompactFeatures, language: str | None, context: str | None = None
    ) -> list[int]:
        """Prompt ids for a clip with these features; language None = auto-detect."""
        raise NotImplementedError

    def target(self, text: str, detected_language: str | None = None) -> list[int]:
        """Transcript tokens followed by the end token: what the model must generate.
        `detected_language`: the prompt did not name a language and the model writes it
        itself first (families that do); None otherwise."""
        raise NotImplementedError

    def text_tokens(self, text: str) -> list[int]:
        """Tokens of `text` as it appears inside a transcript (term biasing)."""
        return self.target(text)[:-1]

    def transcript(self, ids: list[int]) -> tuple[str, str | None]:
        """(text, language the model named or None) of generated ids, up to the end token."""
        raise NotImplementedError

    def partial_text(self, ids: list[int]) -> str | None:
        """The transcript so far of ids still being generated, or None while the model is
        still writing a header that is not transcript (streaming)."""
        return self.transcript(ids)[0]

    def text_start(self, ids: list[int]) -> int:
        """Where the transcript's own tokens begin in generated `ids` (after any header)."""
        return 0

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (a token may hold part of a UTF-8 character)."""
        raise NotImplementedError


@dataclass(frozen=True)
class ModelFamily:
    """One family of speech LLMs (encoder -> projector -> LLM) and what differs about it."""

    name: str  # registry key and what adapters record: "voxtral", "qwen3_asr"
    title: str  # for people: "Voxtral", "Qwen3-ASR"
    model_type: str  # config.json's model_type
    architecture: str  # the recognizer's class name in config.json's architectures
    default_model: str
    known_models: tuple[KnownModel, ...]
    languages: tuple[str, ...]  # ISO 639-1 codes its model card lists
    export_formats: tuple[str, ...]  # what `voxadapt export --format` may write
    llm_lora_targets: tuple[str, ...]
    encoder_lora_targets: tuple[str, ...]
    # other architectures of the same model_type, refused with the reason
    refused_architectures: dict[str, str] = field(default_factory=dict)
    # the languages a prompt can name, if narrower than any ISO code (None: any code)
    prompt_languages: tuple[str, ...] | None = None
    # the prompt takes free-text context (terms, names, topic): `--context`
    takes_context: bool = False

    def model_class(self) -> type:
        import transformers

        return getattr(transformers, self.architecture)

    def feature_spec(self, extractor: Any) -> FeatureSpec:
        """The feature spec of a loaded feature extractor of this family."""
        raise NotImplementedError

    def prompts(self, processor: Any, spec: FeatureSpec) -> Prompts:
        """The prompt builder of a loaded processor of this family."""
        prompts = self._prompts(processor, spec)
        prompts.family = self
        return prompts

    def _prompts(self, processor: Any, spec: FeatureSpec) -> Prompts:
        raise NotImplementedError

    def feature_spec_of(self, model: str | Path) -> FeatureSpec:
        """The feature spec of a hub id's or folder's feature extractor."""
        from transformers import AutoFeatureExtractor

        try:
            extractor = AutoFeatureExtractor.from_pretrained(str(model))
        except (OSError, ValueError) as exc:
            raise VoxadaptError(f"cannot load the feature extractor of {model}: {exc}") from None
        return self.feature_spec(extractor)

    def build_tiny(self, out_dir: Path, *, seed: int = 0) -> Path:
        """Write a tiny random model of this family (real tokenizer special tokens and chat
        template) to `out_dir`, loadable like a hub checkpoint."""
        raise NotImplementedError

    def config_problem(self, config: Any) -> str | None:
        """Why a config of this family's model type cannot be used, or None."""
        return None

    def language_problem(self, language: str) -> str | None:
        """Why `language` cannot be named in this family's prompt, or None: a code outside
        the family's list, or, for families that take any code, not ISO 639-1."""
        if self.prompt_languages is None:
            from voxadapt.manifest import language_problem

            return language_problem(language)
        if language not in self.prompt_languages:
            return (
                f"{self.title} cannot be told to transcribe {language!r}: it names "
                f"{', '.join(self.prompt_languages)} (or use --language auto)"
            )
        return None

    def audio_inputs(self, features: list[CompactFeatures], spec: FeatureSpec) -> dict:
        """The model's audio inputs for a batch of clips, in batch order."""
        from voxadapt.features import audio_inputs

        return audio_inputs(features, spec)

    def meta_model(self, config: Any) -> torch.nn.Module:
        """The model of `config` on the meta device (no memory): audits and module paths."""
        import torch

        with torch.device("meta"):
            return self.model_class()(config)
