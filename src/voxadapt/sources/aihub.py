"""AI-Hub label trees, e.g. 의료진 및 환자 음성 (dataset 208).

Two layouts are accepted:

- label JSON beside its audio: ``…/{간호사,의사,환자}/<speaker>/<utt>.json`` + ``<utt>.wav``;
- the released split, labels and audio in parallel trees (``라벨링데이터`` / ``원천데이터``,
  often ``TL_*`` / ``TS_*`` folders), matched by file stem.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from voxadapt.sources.base import Origin, SourceItem, SourceRecord, SourceRejection
from voxadapt.text import decode_line

ROLES = ("간호사", "의사", "환자")
AUDIO_SUFFIXES = (".wav", ".flac", ".WAV", ".FLAC")
# Speaker fields seen across AI-Hub speech datasets, in order of preference.
_SPEAKER_ID_KEYS = ("SpeakerID", "SpeakerId", "speakerId", "SpeakerName", "Speaker")
_SPEAKER_FIELDS = {"Gender": "gender", "Age": "age", "Region": "region"}


def _scan(root: Path) -> tuple[list[Path], dict[str, list[Path]]]:
    """All label JSON files (sorted) and audio files by stem under `root`."""
    labels: list[Path] = []
    audio_by_stem: dict[str, list[Path]] = defaultdict(list)
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if name.endswith(".json"):
                labels.append(path)
            elif name.endswith(AUDIO_SUFFIXES):
                audio_by_stem[path.stem].append(path)
    labels.sort()
    return labels, audio_by_stem


def _common_suffix_length(a: Path, b: Path) -> int:
    """Number of trailing folder names two paths share (used to pick among same-stem files)."""
    count = 0
    for x, y in zip(reversed(a.parent.parts), reversed(b.parent.parts), strict=False):
        if x != y:
            break
        count += 1
    return count


def _find_audio(label: Path, audio_by_stem: dict[str, list[Path]]) -> Path | None:
    candidates = audio_by_stem.get(label.stem, [])
    for candidate in candidates:
        if candidate.parent == label.parent:
            return candidate
    if not candidates:
        return None
    return max(candidates, key=lambda c: (_common_suffix_length(label, c), str(c)))


def _number(value: Any) -> float | None:
    try:
        return float(str(value).strip().rstrip("sS초"))
    except (TypeError, ValueError):
        return None


def _role(label: Path) -> str | None:
    """Speaker role from a folder name: ``의사`` or a split folder such as ``TL_의사``."""
    for part in label.parts:
        for role in ROLES:
            if part == role or part.endswith(f"_{role}"):
                return role
    return None


def read_aihub(root: Path) -> Iterator[SourceRecord]:
    """Yield one record per label JSON and one rejection per audio file without a label."""
    labels, audio_by_stem = _scan(root)
    used_audio: set[Path] = set()
    for label in labels:
        origin = Origin(str(label))
        try:
            text, _ = decode_line(label.read_bytes())
            data = json.loads(text)
        except UnicodeDecodeError:
            yield SourceRejection(origin, "undecodable_label", "label is neither UTF-8 nor CP949")
            continue
        except json.JSONDecodeError as exc:
            yield SourceRejection(origin, "malformed_label", f"invalid JSON: {exc.msg}")
            continue
        transcription = data.get("전사정보") if isinstance(data, dict) else None
        if not isinstance(transcription, dict) or "LabelText" not in transcription:
            yield SourceRejection(origin, "malformed_label", "no 전사정보.LabelText")
            continue
        raw_text = str(transcription.get("LabelText") or "")
        audio = _find_audio(label, audio_by_stem)
        if audio is None:
            yield SourceRejection(
                origin,
                "missing_audio",
                f"no audio file named {label.stem}.wav under {root}",
                raw_text=raw_text,
                audio=label.with_suffix(".wav").absolute(),
                id=label.stem,
            )
            continue
        used_audio.add(audio)
        file_info = data.get("파일정보") or {}
        speaker_info = data.get("화자정보") or {}
        metadata: dict[str, Any] = {}
        role = _role(label)
        if role:
            metadata["role"] = role
        for key, name in _SPEAKER_FIELDS.items():
            if speaker_info.get(key) not in (None, ""):
                metadata[name] = str(speaker_info[key])
        speaker = next(
            (str(speaker_info[k]) for k in _SPEAKER_ID_KEYS if speaker_info.get(k)), None
        )
        # The layout puts each speaker in its own folder; the folder wins over a
        # free-text name field, which is not guaranteed unique.
        if role and _role(Path(label.parent.name)) is None:
            speaker = label.parent.name
        yield SourceItem(
            origin=origin,
            audio=audio.absolute(),
            raw_text=raw_text,
            id=label.stem,
            speaker=speaker,
            label_duration=_number(file_info.get("FileLength")),
            metadata=metadata,
        )
    for stem in sorted(audio_by_stem):
        for audio in sorted(audio_by_stem[stem]):
            if audio not in used_audio:
                yield SourceRejection(
                    Origin(str(audio)),
                    "missing_label",
                    f"no label JSON named {stem}.json",
                    audio=audio.absolute(),
                    id=stem,
                )
