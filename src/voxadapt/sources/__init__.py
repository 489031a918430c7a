"""Input-format parsers. Each turns a SOURCE into SourceItem / SourceRejection records."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from voxadapt.sources.aihub import read_aihub
from voxadapt.sources.base import Origin, SourceItem, SourceRecord, SourceRejection
from voxadapt.sources.hf import read_hf
from voxadapt.sources.jsonl import read_jsonl
from voxadapt.sources.kaldi import read_kaldi
from voxadapt.sources.lhotse import read_lhotse
from voxadapt.sources.scp import read_scp

# format name -> (parser, whether SOURCE is a directory; None: a file or a directory)
PARSERS: dict[str, tuple[Callable[[Path], Iterator[SourceRecord]], bool | None]] = {
    "scp": (read_scp, False),
    "aihub": (read_aihub, True),
    "kaldi": (read_kaldi, True),
    "jsonl": (read_jsonl, False),
    # NeMo manifests are JSON lines (audio_filepath, duration, text, offset)
    "nemo": (read_jsonl, False),
    # Lhotse: a CutSet, supervisions (+ recordings beside them), or a folder with both
    "lhotse": (read_lhotse, None),
    # Hugging Face datasets: parquet files/folders, save_to_disk folders, audiofolder layouts;
    # prepare binds where embedded audio goes and the column names (read_hf's keywords)
    "hf": (read_hf, None),
}
FORMATS = tuple(PARSERS)

__all__ = ["FORMATS", "PARSERS", "Origin", "SourceItem", "SourceRecord", "SourceRejection"]
