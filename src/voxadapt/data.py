"""Training examples: the family's transcription prompt + target tokens, features from the cache
or audio."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from voxadapt.audio import AudioError
from voxadapt.augment import SpecAugmentOptions, augment_rng, spec_augment
from voxadapt.errors import VoxadaptError
from voxadapt.families.base import Prompts
from voxadapt.features import (
    CacheEntryError,
    CompactFeatures,
    FeatureSpec,
    FeatureStore,
    audio_inputs,
    utterance_features,
    utterance_key,
)
from voxadapt.manifest import Utterance

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value the loss skips
AUTO_LANGUAGE = "auto"  # no language in the prompt: the model detects it
MANIFEST_LANGUAGE = "manifest"  # each record's own `language`


def prompt_language(setting: str, item_language: str | None) -> str | None:
    """The language written into a prompt, for a `language` setting (an ISO 639-1 code,
    'auto' or 'manifest') and the record's own language. None: the model detects it."""
    if setting == AUTO_LANGUAGE:
        return None
    if setting == MANIFEST_LANGUAGE:
        return item_language
    return setting


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    features: CompactFeatures
    utterance: Utterance


class TranscriptionDataset:
    """Utterances as (prompt + target) token ids with labels masked over the prompt.

    A map-style dataset (a DataLoader needs only `__len__` and `__getitem__`), not a
    `torch.utils.data.Dataset` subclass, so that importing this module never imports torch.
    """

    def __init__(
        self,
        utterances: list[Utterance],
        prompts: Prompts,
        *,
        store: FeatureStore | None = None,
        language: str = "ko",
        augment: SpecAugmentOptions | None = None,
        speeds: Sequence[float] = (1.0,),
        seed: int = 0,
    ) -> None:
        self.utterances = utterances
        self.augment = augment if augment is not None and augment.enabled else None
        self.speeds = tuple(speeds)  # speed perturbation: one factor drawn per clip and epoch
        self.seed = seed
        self.epoch = 0  # set by the trainer before each epoch: augmentation depends on it
        self.prompts = prompts
        self.spec = prompts.spec
        self.store = store
        self.language = language
        # cache keys per speed factor (None: not cached, computed on the fly)
        self.speed_keys: dict[float, list[str | None]] = {
            speed: [None] * len(utterances) for speed in self.speeds
        }
        if store is not None:
            for speed in self.speeds:
                self._find_cached(store, speed)
        self.keys = self.speed_keys.get(1.0, [None] * len(utterances))

        # a clip must be cached at every speed it may be drawn at, or have its audio file
        missing_audio = [
            u.audio
            for index, u in enumerate(utterances)
            if any(self.speed_keys[s][index] is None for s in self.speeds)
            and not os.path.isfile(u.audio)
        ]
        if missing_audio:
            raise VoxadaptError(
                f"{len(missing_audio)} audio files of the manifest are missing, "
                f"e.g. {missing_audio[0]}; re-run `voxadapt prepare`"
            )

    def _find_cached(self, store: FeatureStore, speed: float) -> None:
        keys, missing = self.speed_keys[speed], 0
        for index, utterance in enumerate(self.utterances):
            try:
                key = utterance_key(utterance, self.spec, speed)
            except OSError:
                key = None
            if key is not None and key in store:
                keys[index] = key
            else:
                missing += 1
        if missing:
            log.warning(
                "%d of %d utterances are not in the feature cache %s at speed %g; computing "
                "them on the fly (run `voxadapt cache%s` to avoid this)",
                missing,
                len(self.utterances),
                store.root,
                speed,
                f" --speed {','.join(f'{s:g}' for s in self.speeds)}" if speed != 1.0 else "",
            )

    def __len__(self) -> int:
        return len(self.utterances)

    def speed_of(self, index: int) -> float:
        """The speed factor of an utterance in the current epoch (seeded, like SpecAugment)."""
        if len(self.speeds) == 1:
            return self.speeds[0]
        rng = augment_rng(self.seed, self.epoch, self.utterances[index].id, stream=1)
        return self.speeds[int(rng.integers(len(self.speeds)))]

    def features(self, index: int, speed: float = 1.0) -> CompactFeatures:
        """From the cache, else (or if the cached entry is corrupt) from the audio file."""
        key = self.speed_keys[speed][index] if speed in self.speed_keys else None
        utterance = self.utterances[index]
        if key is not None and self.store is not None:
            try:
                return self.store.get(key)
            except CacheEntryError as exc:
                log.warning("utterance %s: %s; using the audio file instead", utterance.id, exc)
        try:
            return utterance_features(utterance, self.spec, speed)
        except AudioError as exc:
            raise VoxadaptError(f"utterance {utterance.id}: {exc}") from None

    def __getitem__(self, index: int) -> Example:
        utterance = self.utterances[index]
        features = self.features(index, self.speed_of(index))
        if self.augment is not None:
            rng = augment_rng(self.seed, self.epoch, utterance.id)
            features = spec_augment(features, self.augment, rng)
        language = prompt_language(self.language, utterance.language)
        prompt = self.prompts.prompt_for(features, language)
        # unprompted, families that name the language first learn to name the record's
        detected = utterance.language if language is None else None
        target = self.prompts.target(utterance.text, detected)
        return Example(
            input_ids=prompt + target,
            labels=[IGNORE_INDEX] * len(prompt) + target,
            features=features,
            utterance=utterance,
        )


class Collator:
    """Right-pad ids/labels; the batch's audio inputs in its family's layout, in batch order
    (`features.audio_inputs`)."""

    def __init__(self, spec: FeatureSpec, pad_id: int) -> None:
        self.spec = spec
        self.pad_id = pad_id

    def __call__(self, examples: list[Example]) -> dict[str, Any]:
        import torch

        width = max(len(e.input_ids) for e in examples)
        input_ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example.input_ids)
            input_ids[row, :n] = torch.tensor(example.input_ids)
            labels[row, :n] = torch.tensor(example.labels)
            attention_mask[row, :n] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            **audio_inputs([e.features for e in examples], self.spec),
            "ids": [e.utterance.id for e in examples],  # for error messages
        }
