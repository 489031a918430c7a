"""Cue files, line wrapping and cue splitting, plain-text transcripts, file names."""

import unicodedata
from itertools import pairwise

import pytest

from voxadapt.subtitles import (
    clip_stems,
    cue_file,
    cues,
    layout_cue,
    srt_time,
    text_width,
    transcript_text,
    wrap_lines,
)


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


SHORT = {"text": "환자분, 오늘 아침에 혈압약은 드셨어요?", "duration": 4.2049}
EMPTY = {"text": "", "duration": 0}
LONG = {
    "text": "x",
    "segments": [
        {"start": 1.91, "end": 6.4, "text": "환자분, 오늘 아침에 혈압약은 드셨어요?"},
        {"start": 6.4, "end": 8.0, "text": ""},
        {"start": 8.54, "end": 3723.3105, "text": "가슴 통증이  언제부터 시작되었나요?"},
    ],
}


# Written by the implementation before line widths existed: without --max-line-width and
# --max-line-count the files stay byte for byte what they were.
@pytest.mark.parametrize(
    ("row", "fmt", "expected"),
    [
        (
            SHORT,
            "srt",
            "1\n00:00:00,000 --> 00:00:04,205\n환자분, 오늘 아침에 혈압약은 드셨어요?\n",
        ),
        (
            SHORT,
            "vtt",
            "WEBVTT\n\n00:00:00.000 --> 00:00:04.205\n환자분, 오늘 아침에 혈압약은 드셨어요?\n\n",
        ),
        # nothing said: no cue (an empty SRT, a WebVTT header alone), as verbose_json
        (EMPTY, "srt", ""),
        (EMPTY, "vtt", "WEBVTT\n"),
        (
            LONG,
            "srt",
            "1\n00:00:01,910 --> 00:00:06,400\n환자분, 오늘 아침에 혈압약은 드셨어요?\n\n"
            "2\n00:00:08,540 --> 01:02:03,310\n가슴 통증이  언제부터 시작되었나요?\n",
        ),
        (
            LONG,
            "vtt",
            "WEBVTT\n\n00:00:01.910 --> 00:00:06.400\n환자분, 오늘 아침에 혈압약은 드셨어요?\n\n"
            "00:00:08.540 --> 01:02:03.310\n가슴 통증이  언제부터 시작되었나요?\n\n",
        ),
    ],
)
def test_cue_files_without_line_limits_are_unchanged(row, fmt, expected):
    assert cue_file(row, fmt) == expected
    assert cue_file(row, fmt, max_line_width=None, max_line_count=None) == expected


@pytest.mark.parametrize(
    ("text", "width", "lines"),
    [
        (
            "환자분 오늘 아침에 혈압약은 드셨어요?",
            8,
            ["환자분 오늘", "아침에 혈압약은", "드셨어요?"],
        ),
        ("CT 촬영 결과는 정상입니다.", 6, ["CT 촬영", "결과는", "정상입니다."]),
        ("ab cd", 5, ["ab cd"]),  # exactly the width fits
        ("ab cd", 4, ["ab", "cd"]),
        ("가나다라마바사", 3, ["가나다", "라마바", "사"]),  # one word longer than a line
        ("a 가나다라마 b", 3, ["a", "가나다", "라마", "b"]),  # the cut word's tail starts a line
        ("네 네", 1, ["네", "네"]),
        ("  혈압을\t재요\n다시  ", 20, ["혈압을 재요 다시"]),  # any run of whitespace is one break
        ("", 5, []),
        (" \t\n", 5, []),
        (nfd("한국 사람"), 5, [nfd("한국 사람")]),  # a decomposed syllable is one character
        (nfd("한국사람"), 3, [nfd("한국사"), nfd("람")]),  # and is never cut apart
        ("cafe\u0301s", 2, ["ca", "fe\u0301", "s"]),  # an accent stays on its letter
    ],
)
def test_lines_wrap_at_spaces_and_cut_only_overlong_words(text, width, lines):
    assert wrap_lines(text, width) == lines
    assert all(text_width(line) <= width for line in lines)
    assert "".join(lines).replace(" ", "") == "".join(text.split())  # nothing lost or added


@pytest.mark.parametrize(
    ("cue", "width", "count", "expected"),
    [
        ((0.0, 9.0, "가나 다라 마바"), 2, 2, [(0.0, 6.0, "가나\n다라"), (6.0, 9.0, "마바")]),
        (
            (0.0, 6.0, "가 나다 라마바"),
            3,
            1,
            [(0.0, 1.0, "가"), (1.0, 3.0, "나다"), (3.0, 6.0, "라마바")],  # time by characters
        ),
        ((0.0, 3.0, "가나다 라마바"), 3, 1, [(0.0, 1.5, "가나다"), (1.5, 3.0, "라마바")]),
        ((1.0, 3.0, "혈압을 재겠습니다"), 4, None, [(1.0, 3.0, "혈압을\n재겠습니\n다")]),
        ((0.0, 2.0, "가. 나"), 2, 1, [(0.0, 4 / 3, "가."), (4 / 3, 2.0, "나")]),  # '.' counts
        ((2.0, 4.0, "가나 다라"), 10, 1, [(2.0, 4.0, "가나 다라")]),  # fits: one cue
        ((0.0, 1.0, ""), 4, 2, []),  # nothing to show: no cue
        ((0.0, 1.0, "   "), 4, 2, []),
        ((0.0, 1.0, "\u200d"), None, None, []),  # not even without a width
        ((3.0, 3.0, "가 나"), 1, 1, [(3.0, 3.0, "가"), (3.0, 3.0, "나")]),  # no time to share
        ((0.0, 4.0, "가나다라"), None, None, [(0.0, 4.0, "가나다라")]),
        ((0.0, 2.0, "a  b"), None, 3, [(0.0, 2.0, "a  b")]),  # a count alone changes nothing
    ],
)
def test_long_cues_split_into_consecutive_cues(cue, width, count, expected):
    laid_out = layout_cue(cue, width, count)
    assert [text for _, _, text in laid_out] == [text for _, _, text in expected]
    times = [t for start, end, _ in laid_out for t in (start, end)]
    assert times == pytest.approx([t for start, end, _ in expected for t in (start, end)])
    for (_, end, _), (start, _, _) in pairwise(laid_out):
        assert end == start  # consecutive: no gap, no overlap


def test_wrapped_cue_files_number_and_time_every_cue():
    row = {"segments": LONG["segments"][:1], "text": "x"}
    assert cue_file(row, "srt", max_line_width=8, max_line_count=1) == (
        "1\n00:00:01,910 --> 00:00:03,407\n환자분, 오늘\n\n"
        "2\n00:00:03,407 --> 00:00:05,153\n아침에 혈압약은\n\n"
        "3\n00:00:05,153 --> 00:00:06,400\n드셨어요?\n"
    )
    assert cue_file(row, "vtt", max_line_width=8, max_line_count=2) == (
        "WEBVTT\n\n00:00:01.910 --> 00:00:05.153\n환자분, 오늘\n아침에 혈압약은\n\n"
        "00:00:05.153 --> 00:00:06.400\n드셨어요?\n\n"
    )
    laid_out = cues(LONG, max_line_width=5, max_line_count=1)
    assert all(len(text.split("\n")) == 1 and text_width(text) <= 5 for _, _, text in laid_out)
    assert [srt_time(a) for a, _, _ in laid_out] == sorted(srt_time(a) for a, _, _ in laid_out)


@pytest.mark.parametrize(
    ("row", "text"),
    [
        ({"text": "혈압을  재겠습니다\n네"}, "혈압을 재겠습니다 네\n"),
        (LONG, "환자분, 오늘 아침에 혈압약은 드셨어요?\n가슴 통증이 언제부터 시작되었나요?\n"),
        ({"text": ""}, ""),
        ({"text": " ", "segments": [{"start": 0, "end": 1, "text": " "}]}, ""),
    ],
)
def test_plain_text_is_the_transcript_a_line_per_segment(row, text):
    assert transcript_text(row) == text


@pytest.mark.parametrize(
    ("ids", "reserved", "stems"),
    [
        (["/calls/u0.wav", "/other/u0.wav"], [], ["u0", "u0~2"]),
        (["s1/u0.wav", "s2/u0.wav"], [], ["s1_u0", "s2_u0"]),
        (["a.wav", "A.flac"], [], ["a", "A~2"]),  # case-insensitive file systems
        (["transcripts.wav", "b.wav"], ["transcripts"], ["transcripts~2", "b"]),
        (
            ["Transcripts.wav", "transcripts~2.wav"],
            ["transcripts"],
            ["Transcripts~2", "transcripts_2"],
        ),
        (["../.hidden.wav"], [], ["hidden"]),
        ([""], [], ["clip"]),
        (["통화 1.wav"], [], ["통화_1"]),
    ],
)
def test_clip_file_stems_never_collide(ids, reserved, stems):
    assert clip_stems(ids, reserved) == stems


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_line_breaks_in_a_transcript_never_split_a_cue(fmt):
    """A model (or a hand-edited row) may put line breaks, blank lines or `-->` in its text:
    every cue must still be one block, or players and ffmpeg drop the cues after it."""
    from voxadapt.subtitles import cue_file

    row = {
        "text": "unused",
        "segments": [
            {"start": 0.0, "end": 1.5, "text": "첫 줄\n\n둘째 줄"},
            {"start": 1.5, "end": 3.0, "text": "혈압 --> 130\r\n"},
            {"start": 3.0, "end": 4.0, "text": " \n "},
            {"start": 4.0, "end": 5.0, "text": "끝\u2028입니다"},
        ],
    }
    text = cue_file(row, fmt)
    body = text.removeprefix("WEBVTT\n\n")
    blocks = [block for block in body.split("\n\n") if block.strip()]
    assert len(blocks) == 3  # the blank segment is no cue
    for block in blocks:
        lines = block.strip("\n").split("\n")
        timing = [line for line in lines if "-->" in line]
        assert len(timing) == 1 and all(line.strip() for line in lines)
    assert "첫 줄 둘째 줄" in text and "혈압 -> 130" in text and "끝 입니다" in text


HOSTILE = [
    "첫 줄\n\n둘째 줄",
    "혈압 --> 130\r\n",
    "1\n\n00:00:01,000 --> 00:00:02,000\n가짜 큐",
    "WEBVTT\n\nNOTE 주석처럼 보이는 말",
    "a <b>굵게</b> & 그리고 &amp; <c.x>태그</c>",
    "  \t 앞뒤 공백과\u2028줄\u2029나눔\x85끝\v\f ",
    "🩺 이모지 👩‍⚕️ 와 결합문자 cafe\u0301 " + unicodedata.normalize("NFD", "한국어"),
    "-->-->--> ->",
    "가" * 45,
    "",
    "   ",
]


def _parsed_texts(text: str, fmt: str) -> list[tuple[float, float, str]]:
    """Every cue of a file as the `srt` or `webvtt-py` library reads it: (start, end, text)."""
    import io

    import srt
    import webvtt

    if fmt == "srt":
        return [
            (c.start.total_seconds(), c.end.total_seconds(), c.content)
            for c in srt.parse(text, ignore_errors=False)
        ]
    return [(c.start_in_seconds + c.start_time.milliseconds / 1000, 0.0, c.raw_text)
            for c in webvtt.from_buffer(io.StringIO(text))]  # fmt: skip


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
@pytest.mark.parametrize(("width", "count"), [(None, None), (12, None), (12, 1), (5, 2)])
def test_hostile_transcripts_give_cue_files_the_parsers_read_back(fmt, width, count):
    """Item 7 of issue 27: whatever a model writes, the srt and webvtt libraries read every
    cue back, with its text on at most --max-line-count lines of at most --max-line-width
    characters, no blank line inside, and the words in order."""
    import html

    segments = [
        {"start": float(i), "end": float(i) + 0.9, "text": text} for i, text in enumerate(HOSTILE)
    ]
    row = {"text": "x", "segments": segments}
    text = cue_file(row, fmt, max_line_width=width, max_line_count=count)
    parsed = _parsed_texts(text, fmt)
    laid_out = cues(row, max_line_width=width, max_line_count=count)
    assert len(parsed) == len(laid_out) > 0
    for (_, _, read), (_, _, written) in zip(parsed, laid_out):
        shown = html.unescape(read) if fmt == "vtt" else read  # what a player shows
        assert shown == written
        lines = shown.split("\n")
        assert all(line.strip() for line in lines)  # no blank line inside a cue
        assert "-->" not in read
        if width is not None:
            assert all(text_width(line) <= width for line in lines)
        if count is not None:
            assert len(lines) <= count
    spoken = [_cue_text_words(s["text"]) for s in segments if s["text"].strip()]
    assert "".join(w for _, _, t in laid_out for w in t.split()) == "".join(spoken)


def _cue_text_words(text: str) -> str:
    return "".join(" ".join(text.split()).replace("-->", "->").split())


def test_word_times_split_long_cues_where_the_words_are_spoken():
    words = [
        {"word": "환자분,", "start": 1.0, "end": 1.5},
        {"word": "오늘 -", "start": 1.6, "end": 2.0},  # punctuation joined to a word
        {"word": "아침에", "start": 4.0, "end": 4.4},
        {"word": "혈압약은", "start": 4.5, "end": 5.2},
    ]
    cue = (0.5, 6.0, "환자분, 오늘 - 아침에 혈압약은")
    assert layout_cue(cue, 9, 1, words) == [
        (0.5, 4.0, "환자분, 오늘 -"),  # until the next cue's first word starts
        (4.0, 6.0, "아침에 혈압약은"),
    ]
    assert layout_cue(cue, 4, 1, words) == [
        (0.5, 1.6, "환자분,"),
        (1.6, 4.0, "오늘 -"),
        (4.0, 4.5, "아침에"),
        (4.5, 6.0, "혈압약은"),
    ]
    # a word cut across lines: the cut falls between its start and end by characters
    assert layout_cue(
        (0.0, 3.0, "가나다라"), 2, 1, [{"word": "가나다라", "start": 1.0, "end": 3.0}]
    ) == [
        (0.0, 2.0, "가나"),
        (2.0, 3.0, "다라"),
    ]
    # words of another text (edited by hand): character proportions, as without words
    assert layout_cue((0.0, 2.0, "가 나"), 1, 1, [{"word": "다", "start": 0.0, "end": 0.1}]) == [
        (0.0, 1.0, "가"),
        (1.0, 2.0, "나"),
    ]
    words = [{"word": "가나", "start": 0.2, "end": 0.9}, {"word": "다라", "start": 3.0, "end": 3.5}]
    row = {"text": "가나 다라", "duration": 4.0, "words": words}
    assert cue_file(row, "srt", max_line_width=2, max_line_count=1) == (
        "1\n00:00:00,000 --> 00:00:03,000\n가나\n\n2\n00:00:03,000 --> 00:00:04,000\n다라\n"
    )


# ------------------------------------------------------------ grapheme clusters, empty cues

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # man ZWJ woman ZWJ girl: one emoji
THUMB = "\U0001f44d\U0001f3fd"  # thumbs up, medium skin tone
KOREA = "\U0001f1f0\U0001f1f7"  # regional indicators K R: one flag
KEYCAP = "1\ufe0f\u20e3"
SCOTLAND = "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"


@pytest.mark.parametrize(
    ("text", "clusters"),
    [
        (FAMILY + "네", [FAMILY, "네"]),
        (THUMB + THUMB, [THUMB, THUMB]),
        (KOREA + "\U0001f1ef\U0001f1f5", [KOREA, "\U0001f1ef\U0001f1f5"]),  # flags pair up
        (KEYCAP + "2", [KEYCAP, "2"]),
        (SCOTLAND + "a", [SCOTLAND, "a"]),
        (nfd("한글"), [nfd("한"), nfd("글")]),
        ("\u1100\u1161\u11a8\u1100", ["\u1100\u1161\u11a8", "\u1100"]),  # jamo: 각 + ㄱ
        ("e\u0301\u0327x", ["e\u0301\u0327", "x"]),  # two marks on one letter
        ("\u200d가", ["\u200d가"]),  # a stray joiner at the start rides on what follows
        ("가\u200d나", ["가\u200d", "나"]),  # ZWJ between letters joins nothing
        ("\u0301", ["\u0301"]),  # nothing else to ride on
        ("a \u200d", ["a", " ", "\u200d"]),
        ("\u3164 가", ["\u3164", " ", "가"]),  # never carried across a space
    ],
)
def test_graphemes_are_what_a_reader_counts(text, clusters):
    from voxadapt.subtitles import graphemes

    assert graphemes(text) == clusters
    assert "".join(graphemes(text)) == text  # nothing lost or added


@pytest.mark.parametrize(
    "text",
    [
        FAMILY * 3,
        f"{FAMILY} {THUMB}{KOREA} 네 {KEYCAP}",
        f"\u200d {FAMILY}\u200d \u200d",  # joiners alone between spaces
        "\u0301 가나 \u0301",  # combining marks without a base
        nfd("혈압을 재겠습니다"),
        "가\u200b나 \ufeff다",  # zero-width space and BOM inside words
        "\u3164 가 \u3164",  # Hangul filler: a letter drawn blank
        SCOTLAND + SCOTLAND,
    ],
)
@pytest.mark.parametrize("width", [1, 2, 3])
def test_narrow_wrapping_never_splits_a_cluster_or_leaves_a_blank_line(text, width):
    from voxadapt.subtitles import graphemes

    lines = wrap_lines(text, width)
    blank = " \u200d\u0301\u3164\ufeff\u200b"
    whole = {cluster.strip(blank) for cluster in graphemes(text)} - {""}
    for line in lines:
        assert text_width(line) <= width or len(graphemes(line)) == 1
        assert text_width(line) > 0 and line.strip(blank)  # never a blank line
        # each cluster of a line (without the strays riding on it) is one of the text's
        assert all(cluster.strip(blank) in whole for cluster in graphemes(line.replace(" ", "")))
    assert "".join("".join(lines).split()) == "".join(text.split())  # nothing lost
    laid_out = layout_cue((0.0, 4.0, text), width, 1)
    assert all(text.strip(" \u200d\u0301") for _, _, text in laid_out)


@pytest.mark.parametrize(
    "row",
    [
        {"text": "", "duration": 40.0},  # a silent clip
        {"text": " \u200d ", "duration": 40.0},
        {"text": "", "duration": 52.0, "segments": []},  # long-form without speech
        {"text": "", "segments": [{"start": 1.0, "end": 2.0, "text": "\u200d"}]},
        {"text": "", "segments": [{"start": 1.0, "end": 2.0, "text": "\u0301 \u3164"}]},
    ],
)
@pytest.mark.parametrize(("width", "count"), [(None, None), (1, 1), (20, 2)])
def test_nothing_to_show_is_no_cue(row, width, count):
    assert cues(row, max_line_width=width, max_line_count=count) == []
    assert cue_file(row, "srt", max_line_width=width, max_line_count=count) == ""
    assert cue_file(row, "vtt", max_line_width=width, max_line_count=count) == "WEBVTT\n"
    assert transcript_text(row) == ""


def test_a_recording_with_one_spoken_segment_has_one_cue():
    row = {
        "text": "네",
        "segments": [
            {"start": 0.0, "end": 3.0, "text": ""},
            {"start": 3.0, "end": 4.0, "text": "네"},
            {"start": 4.0, "end": 9.0, "text": " "},
        ],
    }
    assert cue_file(row, "srt") == "1\n00:00:03,000 --> 00:00:04,000\n네\n"
