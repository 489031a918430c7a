"""Lhotse manifests (k2/icefall, NeMo speechlm2): read them as a source, write them as output.

SOURCE is a CutSet manifest, a supervisions manifest with its recordings manifest beside it
(`*supervisions*` -> `*recordings*`), or a folder holding one of each. Each supervision is
one utterance: a span (`start`, `duration`) of a recording's audio file. `lhotse` itself
reads and writes the files (an optional extra, imported only here).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from voxadapt.errors import SourceError
from voxadapt.sources.base import Origin, SourceItem, SourceRecord, SourceRejection

INSTALL = 'pip install "voxadapt[lhotse]"'
_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")


def _lhotse() -> Any:
    try:
        import lhotse
    except ImportError:
        raise SourceError(f"reading Lhotse manifests needs lhotse: {INSTALL}") from None
    return lhotse


def _manifests(source: Path) -> tuple[Path | None, Path | None, Path | None]:
    """(cuts, recordings, supervisions) manifest paths for SOURCE."""

    def kind(path: Path, word: str) -> bool:
        return word in path.name and path.name.endswith(_SUFFIXES)

    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file())
        cuts = next((p for p in files if kind(p, "cuts")), None)
        recordings = next((p for p in files if kind(p, "recordings")), None)
        supervisions = next((p for p in files if kind(p, "supervisions")), None)
        return (None, recordings, supervisions) if supervisions else (cuts, None, None)
    if "supervisions" in source.name:
        return None, source.with_name(source.name.replace("supervisions", "recordings")), source
    return source, None, None


def read_lhotse(source: Path) -> Iterator[SourceRecord]:
    """One record per supervision of the manifests SOURCE names."""
    lhotse = _lhotse()
    cuts_path, recordings_path, supervisions_path = _manifests(source)
    try:
        if supervisions_path is not None:
            if recordings_path is None or not recordings_path.is_file():
                raise SourceError(f"no recordings manifest beside {supervisions_path}")
            recordings = lhotse.load_manifest(recordings_path)
            supervisions = lhotse.load_manifest(supervisions_path)
            by_id = {recording.id: recording for recording in recordings}
            pairs = [(s, by_id.get(s.recording_id), 0.0) for s in supervisions]
            origin_file = supervisions_path
        elif cuts_path is not None and cuts_path.is_file():
            cuts = lhotse.load_manifest(cuts_path)
            # a supervision's start is relative to its cut, and a trimmed or windowed cut
            # starts inside its recording (`trim_to_supervisions`, `cut_into_windows`)
            pairs = [(s, cut.recording, float(cut.start)) for cut in cuts for s in cut.supervisions]
            origin_file = cuts_path
        else:
            raise SourceError(f"{source}: no Lhotse cuts or supervisions manifest")
    except SourceError:
        raise
    except Exception as exc:  # lhotse raises many kinds on a malformed manifest
        raise SourceError(f"{source}: not a readable Lhotse manifest ({exc})") from None
    for line, (supervision, recording, cut_start) in enumerate(pairs, start=1):
        yield _record(supervision, recording, cut_start, Origin(str(origin_file), line))


# A span may overshoot its recording by this much (rounding of start and duration).
_OVERSHOOT_S = 0.02


def _record(supervision: Any, recording: Any, cut_start: float, origin: Origin) -> SourceRecord:
    text = supervision.text
    if recording is None:
        return SourceRejection(
            origin,
            "missing_audio",
            f"recording {supervision.recording_id} is not in the manifest",
            text,
            id=supervision.id,
        )
    files = [s for s in recording.sources if s.type == "file"]
    if len(recording.sources) != 1 or not files:
        return SourceRejection(
            origin,
            "unsupported_audio_source",
            "only recordings backed by one audio file are supported",
            text,
            id=supervision.id,
        )
    if not isinstance(text, str):
        return SourceRejection(
            origin, "missing_transcript", "supervision has no text", id=supervision.id
        )
    start = cut_start + float(supervision.start)  # seconds into the recording
    duration, length = float(supervision.duration), float(recording.duration)
    if not (math.isfinite(start) and math.isfinite(duration) and duration > 0):
        return SourceRejection(
            origin, "malformed_line", "start/duration are not valid", text, id=supervision.id
        )
    if start < -_OVERSHOOT_S or start + duration > length + _OVERSHOOT_S:
        return SourceRejection(
            origin,
            "segment_out_of_range",
            f"span {start:.3f}-{start + duration:.3f} s lies outside its {length:.3f} s recording",
            text,
            id=supervision.id,
        )
    start = max(start, 0.0)
    duration = min(duration, length - start)
    channel = supervision.channel
    channels = channel if isinstance(channel, list) else [channel]
    if recording.num_channels > 1 and sorted(channels) != list(range(recording.num_channels)):
        return SourceRejection(
            origin,
            "channel_selection_unsupported",
            f"the supervision is channel {channel} of a {recording.num_channels}-"
            "channel recording; averaging the channels would mix talkers: split the channels "
            "into files first (sox in.wav out.wav remix N)",
            text,
            id=supervision.id,
        )
    whole = start == 0 and abs(duration - length) < 1e-3
    custom = {
        k: v
        for k, v in (supervision.custom or {}).items()
        if isinstance(v, str | int | float | bool)
    }
    return SourceItem(
        origin=origin,
        audio=Path(files[0].source).absolute(),
        raw_text=text,
        id=supervision.id,
        speaker=supervision.speaker,
        language=supervision.language,
        metadata=custom,
        offset=None if whole else start,
        segment_duration=None if whole else duration,
    )


def write_lhotse(utterances: Iterable[Any], recordings_path: Path, supervisions_path: Path) -> None:
    """Write manifest records as Lhotse recordings + supervisions manifests (one recording
    per audio file, probed by lhotse; one supervision per utterance)."""
    lhotse = _lhotse()
    recordings: dict[str, Any] = {}
    supervisions = []
    for utterance in utterances:
        if utterance.audio not in recordings:
            recording_id = f"rec{len(recordings):06d}-{Path(utterance.audio).stem}"
            recordings[utterance.audio] = lhotse.Recording.from_file(
                utterance.audio, recording_id=recording_id
            )
        recording = recordings[utterance.audio]
        start = utterance.offset or 0.0
        supervisions.append(
            lhotse.SupervisionSegment(
                id=utterance.id,
                recording_id=recording.id,
                start=start,
                # never past the recording's end (durations are rounded, lhotse checks)
                duration=min(utterance.duration, recording.duration - start),
                channel=list(range(recording.num_channels)) if recording.num_channels > 1 else 0,
                text=utterance.text,
                language=utterance.language,
                speaker=utterance.speaker,
                custom={
                    k: v
                    for k, v in utterance.metadata.items()
                    if isinstance(v, str | int | float | bool)
                }
                or None,
            )
        )
    lhotse.RecordingSet.from_recordings(recordings.values()).to_file(recordings_path)
    lhotse.SupervisionSet.from_segments(supervisions).to_file(supervisions_path)
