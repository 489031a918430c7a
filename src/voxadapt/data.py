"""Training examples: transcription prompt + target tokens, features from the cache or audio."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from voxadapt.audio import AudioError
from voxadapt.augment import SpecAugmentOptions, augment_rng, spec_augment
from voxadapt.errors import VoxadaptError
from voxadapt.features import (
    CacheEntryError,
    CompactFeatures,
    FeatureSpec,
    FeatureStore,
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


class PromptBuilder:
    """Token ids of Voxtral's transcription prompt and of transcript targets.

    The prompt `[BOS][INST][BEGIN_AUDIO][AUDIO]x375*chunks[/INST]lang:xx[TRANSCRIBE]` depends
    only on the number of 30 s chunks and the language, so it is built once per pair by
    mistral-common's own `encode_transcription` (the code the processor uses) and reused.
    """

    def __init__(self, processor: Any, spec: FeatureSpec) -> None:
        self.mistral = processor.tokenizer.tokenizer  # mistral_common MistralTokenizer
        self.tekken = self.mistral.instruct_tokenizer.tokenizer
        self.spec = spec
        self.eos_id = int(self.tekken.eos_id)
        self.bos_id = int(self.tekken.bos_id)
        self.pad_id = int(self.tekken.pad_id)
        self.audio_token_id = int(self.tekken.get_special_token("[AUDIO]"))
        self._prompts: dict[tuple[int, str | None], list[int]] = {}

    def prompt(self, n_chunks: int, language: str | None) -> list[int]:
        """Prompt ids for audio spanning `n_chunks` chunks; language None = auto-detect."""
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

    def target(self, text: str) -> list[int]:
        """Transcript tokens followed by EOS: what the model must generate."""
        return [*self.tekken.encode(text, bos=False, eos=False), self.eos_id]

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids, special tokens dropped."""
        from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy

        return self.tekken.decode(ids, special_token_policy=SpecialTokenPolicy.IGNORE)


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    features: CompactFeatures
    utterance: Utterance


class TranscriptionDataset(Dataset):
    """Utterances as (prompt + target) token ids with labels masked over the prompt."""

    def __init__(
        self,
        utterances: list[Utterance],
        prompts: PromptBuilder,
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
        prompt = self.prompts.prompt(features.n_chunks, language)
        target = self.prompts.target(utterance.text)
        return Example(
            input_ids=prompt + target,
            labels=[IGNORE_INDEX] * len(prompt) + target,
            features=features,
            utterance=utterance,
        )


class Collator:
    """Right-pad ids/labels; stack every example's 30 s feature chunks in batch order."""

    def __init__(self, spec: FeatureSpec, pad_id: int) -> None:
        self.spec = spec
        self.pad_id = pad_id

    def __call__(self, examples: list[Example]) -> dict[str, Any]:
        width = max(len(e.input_ids) for e in examples)
        input_ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example.input_ids)
            input_ids[row, :n] = torch.tensor(example.input_ids)
            labels[row, :n] = torch.tensor(example.labels)
            attention_mask[row, :n] = 1
        # Voxtral fills [AUDIO] positions in row-major order from the stacked chunks.
        input_features = torch.cat([e.features.expand(self.spec) for e in examples])
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "input_features": input_features,
            "ids": [e.utterance.id for e in examples],  # for error messages
        }
