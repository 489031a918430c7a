"""What a run is made of: content hashes of its inputs, so that `--resume`, `--compare` and
`score` can tell the same run from a different one, and say what changed.

An identity is a flat dict of named parts (`manifest_audio`, `references`, `model`,
`adapter`, `decode.max_new_tokens`, ...). Throughput knobs (batch size, workers) are never
part of it: they do not change a transcript.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from voxadapt.manifest import Utterance

IDENTITY_FILE = "identity.json"
# Decode options that change speed, not transcripts.
THROUGHPUT_OPTIONS = frozenset({"batch_size", "num_workers"})
_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (streamed), as `sha256:<hex>`."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def _digest_of(values: Iterable[Any]) -> str:
    digest = hashlib.sha256()
    for value in values:
        digest.update(json.dumps(value, ensure_ascii=False, sort_keys=True).encode())
        digest.update(b"\n")
    return f"sha256:{digest.hexdigest()[:32]}"


def audio_identity(utterances: Iterable[Utterance]) -> str:
    """Which audio each id stands for (id, audio path, offset, duration): a change here means
    earlier transcripts belong to other audio."""
    return _digest_of((u.id, u.audio, u.offset, round(u.duration, 3)) for u in utterances)


def reference_identity(utterances: Iterable[Utterance]) -> str:
    """The references scored against (id, text, dual-transcription forms)."""
    return _digest_of((u.id, u.text, u.text_variants) for u in utterances)


def adapter_identity(adapter: Path | str | None) -> str | None:
    """Hash of an adapter folder's weights and config (None: no adapter)."""
    if adapter is None:
        return None
    folder = Path(adapter)
    files = sorted(p for p in folder.glob("*") if p.suffix in (".safetensors", ".json"))
    return _digest_of((p.name, file_digest(p)) for p in files)


def model_identity(model: str | Path) -> str:
    """A model as its hub id at a revision or a local folder's config: `id@revision`.

    For a hub id the revision is the snapshot that is cached locally (what loading it
    offline would use); for a local folder, the hash of its config.json and the size and
    modification time of its weight files (new weights of the same shapes, a retrained
    export into the same folder, are another model)."""
    folder = Path(model)
    if folder.is_dir():
        parts = [file_digest(folder / "config.json")] if (folder / "config.json").is_file() else []
        parts += [
            (p.name, p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.glob("*.safetensors"))
        ]
        return f"{folder.resolve()}@{_digest_of(parts)}"
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(model), "config.json")
    except Exception:  # an id the hub library cannot parse: no revision to record
        cached = None
    if isinstance(cached, str) and "/snapshots/" in cached:
        return f"{model}@{Path(cached).parent.name}"
    return str(model)


def decode_identity(decode: dict[str, Any]) -> dict[str, Any]:
    """The decode options that can change a transcript, as `decode.<name>` parts."""
    return {
        f"decode.{key}": value for key, value in decode.items() if key not in THROUGHPUT_OPTIONS
    }


def changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'part: old -> new' for every part that differs (values shortened for one line)."""

    def shown(value: Any) -> str:
        text = json.dumps(value, ensure_ascii=False, default=str)
        return text if len(text) <= 60 else text[:57] + "..."

    return [
        f"{key}: {shown(saved.get(key))} -> {shown(current.get(key))}"
        for key in sorted(set(saved) | set(current))
        if json.dumps(saved.get(key), default=str, sort_keys=True)
        != json.dumps(current.get(key), default=str, sort_keys=True)
    ]


def read_identity(folder: Path) -> dict[str, Any] | None:
    """The identity a run recorded in `folder`, or None (an older run, or none)."""
    try:
        data = json.loads((Path(folder) / IDENTITY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_identity(folder: Path, identity: dict[str, Any]) -> None:
    from voxadapt.manifest import atomic_write

    with atomic_write(Path(folder) / IDENTITY_FILE) as handle:
        json.dump(identity, handle, ensure_ascii=False, indent=1, sort_keys=True, default=str)
