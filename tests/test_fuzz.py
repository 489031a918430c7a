"""Property tests: hostile input never crashes a parser or the normalizer.

For each source format: any bytes give records, never an exception, and every input item
the format defines gives exactly one record (conservation). For the normalizer: any text
gives training text or a TranscriptError; the text is markup-free, visible, NFC and a fixed
point of normalization.

Hypothesis reuses one test call for many examples, so the tests make their own temporary
folders instead of using the function-scoped `tmp_path`.
"""

from __future__ import annotations

import json
import re
import tempfile
import unicodedata
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxadapt.sources import SourceItem, SourceRecord, SourceRejection
from voxadapt.sources.aihub import read_aihub
from voxadapt.sources.base import non_finite_number
from voxadapt.sources.jsonl import read_jsonl
from voxadapt.sources.kaldi import read_kaldi
from voxadapt.sources.scp import read_scp
from voxadapt.text import (
    TEXT_MODES,
    TextOptions,
    TranscriptError,
    decode_line,
    normalize_transcript,
)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- strategies -----------------------------------------------------------------------------

# Any JSON value, including what json.loads accepts beyond the standard (NaN, Infinity) and
# lone surrogates, which only JSON escapes can produce.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and +-inf included
    | st.text(max_size=12)
    | st.sampled_from(["\ud800", "1e999", "NaN", "inf", "", " ", "배가 아파요", 10**400])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
# Lines: no line break inside (a line break would make two items).
byte_lines = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))
odd_bytes = st.sampled_from(
    [b"", b" ", b"\t", b"\r", b"|", b"\xff\xfe", b"\xef\xbb\xbf", b"\x00", "배".encode("cp949")]
)


def json_line(value: object, ascii_only: bool) -> bytes:
    """`value` as one JSON line; non-ASCII surrogates become invalid UTF-8 bytes."""
    text = json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)
    return text.encode("utf-8", errors="surrogatepass")


def deep(value: bytes) -> bytes:
    return b"[" * 5000 + value


# --- helpers --------------------------------------------------------------------------------


def non_blank(content: bytes) -> list[bytes]:
    """The lines a line-oriented parser counts as input items: a line holding only a
    byte-order mark (or a line ending) is blank."""
    lines = (
        line.removesuffix(b"\r").removeprefix(b"\xef\xbb\xbf") for line in content.split(b"\n")
    )
    return [line for line in lines if line.strip()]


def assert_writable(record: SourceRecord) -> None:
    """The record can be written to rejected.jsonl or a manifest: UTF-8, strict JSON."""
    assert isinstance(record, SourceItem | SourceRejection)
    fields = {
        "file": record.origin.file,
        "line": record.origin.line,
        "id": record.id,
        "audio": None if record.audio is None else str(record.audio),
        "raw_text": record.raw_text,
    }
    if isinstance(record, SourceItem):
        assert isinstance(record.raw_text, str)
        fields.update(
            speaker=record.speaker,
            language=record.language,
            label_duration=record.label_duration,
            metadata=record.metadata,
        )
        # float(age) downstream must not overflow or give NaN
        assert not [v for v in record.metadata.values() if non_finite_number(v)]
    else:
        assert record.reason and isinstance(record.detail, str)
    json.dumps(fields, ensure_ascii=False, allow_nan=False).encode("utf-8")


# --- source parsers -------------------------------------------------------------------------


@FUZZ
@given(
    st.lists(
        byte_lines
        | st.tuples(byte_lines, odd_bytes, byte_lines).map(lambda t: t[0] + b"|" + t[1] + t[2]),
        max_size=8,
    ),
    st.booleans(),
)
def test_scp_any_bytes(lines: list[bytes], trailing_newline: bool) -> None:
    content = b"\n".join(lines) + (b"\n" if trailing_newline else b"")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.scp"
        path.write_bytes(content)
        records = list(read_scp(path))
    assert len(records) == len(non_blank(content))
    for record in records:
        assert_writable(record)


record_like = st.fixed_dictionaries(
    {"audio": json_values | st.sampled_from(["a.wav", "~nosuchuser/a.wav", "\x00"])},
    optional={
        "text": json_values,
        "transcript": json_values,
        "duration": json_values,
        "metadata": json_values,
        "id": json_values,
        "speaker": json_values,
        "lang": json_values,
        "age": json_values,
        "sample_rate": json_values,
    },
)


@FUZZ
@given(
    st.lists(
        byte_lines
        | st.builds(json_line, json_values | record_like, st.booleans())
        | st.builds(json_line, record_like, st.booleans()).map(deep),
        max_size=8,
    )
)
def test_jsonl_any_lines(lines: list[bytes]) -> None:
    content = b"\n".join(lines)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.jsonl"
        path.write_bytes(content)
        records = list(read_jsonl(path))
    assert len(records) == len(non_blank(content))
    for record in records:
        assert_writable(record)


label_like = st.fixed_dictionaries(
    {},
    optional={
        "전사정보": json_values | st.fixed_dictionaries({"LabelText": json_values}),
        "파일정보": json_values | st.fixed_dictionaries({"FileLength": json_values}),
        "화자정보": json_values
        | st.dictionaries(
            st.sampled_from(["Gender", "Age", "Region", "SpeakerID", "Speaker"]), json_values
        ),
    },
)
label_contents = (
    st.binary(max_size=40)
    | st.builds(json_line, label_like | json_values, st.booleans())
    | st.builds(json_line, label_like, st.booleans()).map(deep)
)
folders = st.sampled_from(["의사/D1", "환자/P1", "TL_간호사/N1", "."])


@FUZZ
@given(
    labels=st.lists(st.tuples(folders, label_contents), max_size=5),
    audio=st.lists(st.tuples(st.integers(0, 7), folders), max_size=5),
    dangling_label=st.booleans(),
)
def test_aihub_any_tree(
    labels: list[tuple[str, bytes]], audio: list[tuple[int, str]], dangling_label: bool
) -> None:
    # Label i is named s{i}: label stems are distinct; audio stems may match one or none.
    label_stems = {f"s{i}" for i in range(len(labels))}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for i, (where, content) in enumerate(labels):
            (root / where).mkdir(parents=True, exist_ok=True)
            (root / where / f"s{i}.json").write_bytes(content)
        audio_paths = {root / where / f"s{stem}.wav" for stem, where in audio}
        for path in audio_paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
        if dangling_label:
            (root / "gone.json").symlink_to(root / "nowhere")
            label_stems.add("gone")
        records = list(read_aihub(root))
    # Each label is one item, and claims one audio file of its stem if there is one;
    # every audio file no label claims is one more item.
    claimed = {path.stem for path in audio_paths} & label_stems
    assert len(records) == len(label_stems) + len(audio_paths) - len(claimed)
    for record in records:
        assert_writable(record)


kaldi_lines = st.lists(
    byte_lines
    | st.tuples(
        st.sampled_from([b"u1", b"u2", b"u3", b"\xff", b"\xef\xbb\xbf"]), odd_bytes, byte_lines
    ).map(lambda t: t[0] + b" " + t[1] + t[2]),
    max_size=6,
)


def kaldi_key(line: bytes) -> str | None:
    """The utterance id a Kaldi table line names ("" or None: none)."""
    try:
        return decode_line(line.split(None, 1)[0])[0].strip()
    except UnicodeDecodeError:
        return None


def kaldi_items(tables: list[bytes]) -> int:
    """Input items of a Kaldi dir: each id once, plus each line naming no id or a repeat."""
    ids: set[str] = set()
    extra_lines = 0
    for content in tables:
        seen: set[str] = set()
        for line in non_blank(content):
            key = kaldi_key(line)
            if not key or key in seen:
                extra_lines += 1
            seen.add(key or "")
        ids |= seen - {""}
    return len(ids) + extra_lines


@FUZZ
@given(wav_scp=kaldi_lines, text=kaldi_lines, utt2spk=kaldi_lines)
def test_kaldi_any_tables(wav_scp: list[bytes], text: list[bytes], utt2spk: list[bytes]) -> None:
    tables = [b"\n".join(wav_scp), b"\n".join(text)]
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        (data_dir / "wav.scp").write_bytes(tables[0])
        (data_dir / "text").write_bytes(tables[1])
        (data_dir / "utt2spk").write_bytes(b"\n".join(utt2spk))
        records = list(read_kaldi(data_dir))
    assert len(records) == kaldi_items(tables)
    for record in records:
        assert_writable(record)


# --- normalizer -----------------------------------------------------------------------------

# Pieces of real markup, content that resembles it, and invisible characters.
MARKUP_PIECES = ("(70%)/(칠십 퍼센트)", "(3시) / (세 시)", "(MRI)(엠알아이)", "b/", "l/", "o/")
MORE_MARKUP = ("n/", "u/", "음/", "아/", "그/", "그+", "+그", "*", "(", ")", "/", "//", "+")
LOOKALIKES = ("의사/간호사", "1+1", "on/off", "100km/h", "38.5도", "5,000원", "70%", ".5", "[", "]")
PUNCTUATION = (" ", "  ", ". ", " .", ".", ",", "?", "!", "…", "~")
WORDS = ("e", "b", "가", "나", "배가", "아파요", "그래서", "음")
# controls, zero-width, bidi, BOM, soft hyphen, a lone surrogate
INVISIBLE = tuple("\t\n\x00\x07\x1b\x85\u200b\u200c\u200d\u202e\u2066\ufeff\u00ad\ud800")
# conjoining jamo and a combining accent: they compose once markup between them goes
COMPOSING = tuple("\u1100\u1161\u11a8\u0301")
transcript_pieces = st.sampled_from(
    [*MARKUP_PIECES, *MORE_MARKUP, *LOOKALIKES, *PUNCTUATION, *WORDS, *INVISIBLE, *COMPOSING]
)
transcripts = st.lists(transcript_pieces, max_size=12).map("".join) | st.text(max_size=30)
text_options = st.builds(
    TextOptions,
    text_mode=st.sampled_from(TEXT_MODES),
    drop_fillers=st.booleans(),
    strip_punctuation=st.booleans(),
)
_FILLER_WORDS = "아|어|음|으|응|흠|에|엄|그|뭐"
# What "markup-free" means, written independently of the normalizer's own patterns.
MARKUP = {
    "parenthesis or asterisk": re.compile(r"[()*]"),
    "repetition plus": re.compile(r"(?<!\d)\+|\+(?!\d)"),
    "event tag": re.compile(r"(?<![A-Za-z])[blonu]/(?!/)"),
    "filler slash": re.compile(
        rf"[\uac00-\ud7a3]/(?=\s|$|[.,?!])|(?<![\uac00-\ud7a3])(?:{_FILLER_WORDS})/"
    ),
    "leading punctuation": re.compile(r"^(?:[\s,?!…]|\.(?!\d))"),
}


@FUZZ
@given(transcripts, text_options)
def test_normalizer_output_is_clean_and_stable(raw: str, options: TextOptions) -> None:
    try:
        text = normalize_transcript(raw, options)
    except TranscriptError as exc:
        assert exc.reason in ("empty_text", "unbalanced_brackets")
        return
    assert isinstance(text, str) and text == text.strip() and "  " not in text
    for name, pattern in MARKUP.items():
        assert not pattern.search(text), f"{name} left in {text!r}"
    assert not [c for c in text if unicodedata.category(c) in ("Cc", "Cf", "Cs")]
    assert unicodedata.is_normalized("NFC", text)
    text.encode("utf-8")
    assert normalize_transcript(text, options) == text
