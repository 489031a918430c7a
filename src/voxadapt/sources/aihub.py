"""AI-Hub label trees, e.g. 의료진 및 환자 음성 (dataset 208).

Two layouts are accepted:

- label JSON beside its audio: ``…/{간호사,의사,환자}/<speaker>/<utt>.json`` + ``<utt>.wav``;
- the released split, labels and audio in parallel trees (``라벨링데이터`` / ``원천데이터``,
  often ``TL_*`` / ``TS_*`` folders), matched by file stem.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from voxadapt.audio import CONTAINER_AUDIO_SUFFIXES
from voxadapt.errors import SourceError
from voxadapt.sources.base import (
    Origin,
    SourceItem,
    SourceRecord,
    SourceRejection,
    display_path,
    has_lone_surrogate,
    json_kind,
    non_finite_number,
    not_a_regular_file,
    parse_json,
)
from voxadapt.text import decode_line

log = logging.getLogger(__name__)

ROLES = ("간호사", "의사", "환자")
AUDIO_SUFFIXES = (".wav", ".flac", ".WAV", ".FLAC")
# Speaker fields seen across AI-Hub speech datasets, in order of preference.
_SPEAKER_ID_KEYS = ("SpeakerID", "SpeakerId", "speakerId", "SpeakerName", "Speaker")
_SPEAKER_FIELDS = {"Gender": "gender", "Age": "age", "Region": "region"}


class _MalformedLabel(ValueError):
    """A label whose JSON parses but does not have the AI-Hub shape; the message says why."""


def _scan(root: Path) -> tuple[list[Path], dict[str, list[Path]]]:
    """All label JSON files (sorted) and audio files by stem under `root`.

    Raises SourceError if `root` itself cannot be listed; an unreadable subfolder is logged
    and skipped (its items cannot be counted, but the rest of the tree can still be used).
    """
    try:
        with os.scandir(root):
            pass
    except OSError as exc:
        raise SourceError(f"cannot read SOURCE {root}: {exc.strerror or exc}") from None

    def skip_folder(error: OSError) -> None:
        log.warning("skipping unreadable folder %s: %s", error.filename, error.strerror)

    labels: list[Path] = []
    audio_by_stem: dict[str, list[Path]] = defaultdict(list)
    # Without followlinks a symlink to a folder is not entered, so a link loop cannot recur.
    for folder, _, files in os.walk(root, onerror=skip_folder):
        for name in files:
            path = Path(folder) / name
            if name.endswith(".json"):
                labels.append(path)
            elif name.endswith(AUDIO_SUFFIXES) or path.suffix.lower() in CONTAINER_AUDIO_SUFFIXES:
                audio_by_stem[path.stem].append(path)  # phone recordings (.m4a) read with PyAV
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


def _seconds(value: Any) -> float | None:
    """A duration such as 3.93, "3.93" or "3.93초" in seconds; None if it is not one."""
    if value is None or isinstance(value, bool | list | dict):
        return None
    try:
        seconds = float(str(value).strip().rstrip("sS초"))
    except ValueError:
        return None  # the duration is only a cross-check; prepare measures the audio
    if not math.isfinite(seconds):
        raise _MalformedLabel(f"파일정보.FileLength is not a finite number: {str(value)[:40]}")
    return seconds


def _role(label: Path) -> str | None:
    """Speaker role from a folder name: ``의사`` or a split folder such as ``TL_의사``."""
    for part in label.parts:
        for role in ROLES:
            if part == role or part.endswith(f"_{role}"):
                return role
    return None


def read_aihub(root: Path) -> Iterator[SourceRecord]:
    """Yield one record per label JSON and one rejection per audio file without a label.

    A label claims its audio file whatever becomes of the label, so a broken label and its
    audio count as one input item, not two.
    """
    labels, audio_by_stem = _scan(root)
    claimed_audio: set[Path] = set()
    for label in labels:
        audio = _find_audio(label, audio_by_stem)
        if audio is not None:
            claimed_audio.add(audio)
        yield _label_record(label, audio, root)
    for stem in sorted(audio_by_stem):
        for audio in sorted(audio_by_stem[stem]):
            if audio not in claimed_audio:
                yield SourceRejection(
                    Origin(display_path(audio)),
                    "missing_label",
                    f"no label JSON named {display_path(stem)}.json",
                    audio=Path(display_path(audio.absolute())),
                    id=display_path(stem),
                )


def _label_record(label: Path, audio: Path | None, root: Path) -> SourceRecord:
    """The one record for a label file and the audio file it names (if any)."""
    origin = Origin(display_path(label))

    def reject(reason: str, detail: str, raw_text: str | None = None) -> SourceRejection:
        shown_audio = Path(display_path(audio.absolute())) if audio else None
        return SourceRejection(
            origin, reason, detail, raw_text, audio=shown_audio, id=display_path(label.stem)
        )

    if has_lone_surrogate(str(label)) or (audio and has_lone_surrogate(str(audio))):
        # Manifests are UTF-8; a path holding undecodable bytes cannot be written there.
        return reject("undecodable_path", "file name is not valid UTF-8 (rename the file)")
    problem = not_a_regular_file(label)
    if problem:  # never open a FIFO or device: reading it could block forever
        return reject("not_a_file", problem)
    try:
        data = label.read_bytes()
    except OSError as exc:
        return reject("unreadable_label", f"cannot read label: {exc.strerror or exc}")
    try:
        text, _ = decode_line(data)
    except UnicodeDecodeError:
        return reject("undecodable_label", "label is neither UTF-8 nor CP949")
    parsed, problem = parse_json(text)
    if problem:
        return reject("malformed_label", problem)
    # Without audio, the path the label implies is shown in rejected.jsonl.
    audio_path = (audio or label.with_suffix(".wav")).absolute()
    try:
        item = _label_item(parsed, label, origin, audio_path)
    except _MalformedLabel as exc:
        return reject("malformed_label", str(exc))
    if audio is None:
        return SourceRejection(
            origin,
            "missing_audio",
            f"no audio file named {label.stem}.wav under {root}",
            item.raw_text,
            audio=audio_path,
            id=item.id,
        )
    return item


def _label_item(data: Any, label: Path, origin: Origin, audio: Path) -> SourceItem:
    """The SourceItem a parsed label describes; raises _MalformedLabel if it has no shape."""
    if not isinstance(data, dict):
        raise _MalformedLabel(f"label is {json_kind(data)}, not a JSON object")
    transcription = data.get("전사정보")
    if not isinstance(transcription, dict) or "LabelText" not in transcription:
        raise _MalformedLabel("no 전사정보.LabelText")
    raw_text = transcription["LabelText"]
    if raw_text is None:
        raw_text = ""  # empty transcripts are rejected later, as empty_text
    if not isinstance(raw_text, str):
        # str() of a list or number would become training text.
        raise _MalformedLabel(f"전사정보.LabelText is {json_kind(raw_text)}, not a string")
    file_info = _object(data, "파일정보")
    speaker_info = _object(data, "화자정보")
    metadata: dict[str, Any] = {}
    role = _role(label)
    if role:
        metadata["role"] = role
    for key, name in _SPEAKER_FIELDS.items():
        value = _speaker_field(speaker_info, key)
        if value:
            metadata[name] = value
    speaker = next(
        (value for key in _SPEAKER_ID_KEYS if (value := _speaker_field(speaker_info, key))),
        None,
    )
    # The layout puts each speaker in its own folder; the folder wins over a
    # free-text name field, which is not guaranteed unique.
    if role and _role(Path(label.parent.name)) is None:
        speaker = label.parent.name
    return SourceItem(
        origin=origin,
        audio=audio,
        raw_text=raw_text,
        id=label.stem,
        speaker=speaker,
        label_duration=_seconds(file_info.get("FileLength")),
        metadata=metadata,
    )


def _object(data: dict, key: str) -> dict:
    """Sub-object `key` of a label; {} if absent or null, _MalformedLabel if not an object."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _MalformedLabel(f"{key} is {json_kind(value)}, not an object")
    return value


def _speaker_field(speaker_info: dict, key: str) -> str | None:
    """A 화자정보 field as text (numbers allowed: "Age": 40); None if absent or empty."""
    value = speaker_info.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _MalformedLabel(f"화자정보.{key} is {json_kind(value)}, not a string or number")
    if non_finite_number(value):
        raise _MalformedLabel(f"화자정보.{key} reads as a non-finite number: {str(value)[:40]}")
    return str(value)  # finite: parse_json rejected NaN and Infinity
