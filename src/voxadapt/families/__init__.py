"""The supported model families, looked up by a model's config (transformers' `auto` habit).

`family_of(model)` reads a hub id's or folder's config.json and returns its family, or raises
one line naming what the model is and what is supported; `load_frontend(model)` loads the
processor and returns what every stage needs to turn audio and text into model inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxadapt.families.base import FamilyError, KnownModel, ModelFamily, Prompts
from voxadapt.families.qwen3_asr import QWEN3_ASR
from voxadapt.families.voxtral import VOXTRAL
from voxadapt.features import FeatureSpec

FAMILIES: dict[str, ModelFamily] = {family.name: family for family in (VOXTRAL, QWEN3_ASR)}

__all__ = [
    "FAMILIES",
    "QWEN3_ASR",
    "VOXTRAL",
    "FamilyError",
    "Frontend",
    "KnownModel",
    "ModelFamily",
    "Prompts",
    "family_for_config",
    "family_named",
    "family_of",
    "frontend_of",
    "load_config",
    "load_frontend",
]


def supported() -> str:
    """The supported families and their model types, for messages."""
    return ", ".join(f"{f.title} ({f.model_type})" for f in FAMILIES.values())


def family_named(name: str) -> ModelFamily:
    """The family registered under `name` (as adapters record it)."""
    if name not in FAMILIES:
        raise FamilyError(f"unknown model family {name!r}; supported: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_for_config(config: Any, source: str | Path) -> ModelFamily:
    """The family of a loaded transformers config; FamilyError for any other model,
    including another architecture of a supported model type (a forced aligner)."""
    model_type = getattr(config, "model_type", None)
    for family in FAMILIES.values():
        if family.model_type != model_type:
            continue
        architectures = list(getattr(config, "architectures", None) or [])
        for architecture in architectures:
            if architecture in family.refused_architectures:
                raise FamilyError(f"{source}: {family.refused_architectures[architecture]}")
        problem = family.config_problem(config)
        if problem:
            raise FamilyError(f"{source}: {problem}")
        return family
    raise FamilyError(
        f"{source} is a {model_type!r} model, which voxadapt cannot adapt: it needs an audio "
        f"encoder -> projector -> LLM model of a supported family: {supported()}"
    )


def load_config(model: str | Path) -> Any:
    """The transformers config of a hub id or local folder; FamilyError in one line."""
    from transformers import AutoConfig

    from voxadapt.config import looks_like_path

    text = str(model)
    # a path (not a hub id "namespace/name") that does not exist is a missing folder, not a
    # malformed repo id
    if looks_like_path(text) and not Path(text).expanduser().exists():
        raise FamilyError(f"model folder not found: {text}")
    text = str(Path(text).expanduser()) if text.startswith("~") else text
    from huggingface_hub.errors import StrictDataclassError

    try:
        return AutoConfig.from_pretrained(text)
    except (OSError, ValueError, KeyError, TypeError, StrictDataclassError) as exc:
        # a config transformers' own checks refuse (hidden size not a multiple of the
        # heads...): the cause says what, the wrapper only which validator
        cause = exc.__cause__ if isinstance(exc, StrictDataclassError) and exc.__cause__ else exc
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(exc).__name__
        raise FamilyError(f"cannot read the config of {model}: {detail[:300]}") from None


def family_of(model: str | Path) -> ModelFamily:
    """The family of the model at a hub id or local folder. A released checkpoint's hub id
    is known without reading its config (so options are checked offline, before a
    download)."""
    for family in FAMILIES.values():
        if str(model) in {family.default_model, *(m.hub_id for m in family.known_models)}:
            return family
    return family_for_config(load_config(model), model)


@dataclass
class Frontend:
    """What turns audio and text into one model's inputs: its family, processor, feature
    spec and prompt builder."""

    family: ModelFamily
    processor: Any
    spec: FeatureSpec
    prompts: Prompts


def load_frontend(model: str | Path) -> Frontend:
    """Load the processor of `model` and the family's feature spec and prompt builder."""
    from transformers import AutoProcessor

    family = family_of(model)
    try:
        processor = AutoProcessor.from_pretrained(str(model))
    except (OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FamilyError(f"cannot load the processor of {model}: {detail[:300]}") from None
    return frontend_of(family, processor)


def frontend_of(family: ModelFamily, processor: Any) -> Frontend:
    """The frontend of an already loaded processor."""
    spec = family.feature_spec(processor.feature_extractor)
    return Frontend(family, processor, spec, family.prompts(processor, spec))
