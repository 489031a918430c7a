import contextlib
import time

import pytest

from voxadapt.text import TextOptions, TranscriptError, decode_line, normalize_transcript

SPELLING = TextOptions()
PHONETIC = TextOptions(text_mode="phonetic")
DROP_FILLERS = TextOptions(drop_fillers=True)
NO_PUNCT = TextOptions(strip_punctuation=True)


@pytest.mark.parametrize(
    ("raw", "options", "expected"),
    [
        # dual transcription (철자)/(발음)
        ("통증이 (70%)/(칠십 퍼센트) 정도예요.", SPELLING, "통증이 70% 정도예요."),
        ("통증이 (70%)/(칠십 퍼센트) 정도예요.", PHONETIC, "통증이 칠십 퍼센트 정도예요."),
        ("(3시)/ (세 시)에 오세요", SPELLING, "3시에 오세요"),
        ("(3시) /(세 시)에 오세요", PHONETIC, "세 시에 오세요"),
        ("(MRI)(엠알아이) 찍었어요", SPELLING, "MRI 찍었어요"),
        ("(MRI)(엠알아이) 찍었어요", PHONETIC, "엠알아이 찍었어요"),
        ("(2)/(두) 알씩 (하루)/(하루) 세 번", SPELLING, "2 알씩 하루 세 번"),
        # noise / event tags
        ("b/ 숨을 크게 쉬세요 l/", SPELLING, "숨을 크게 쉬세요"),
        ("o/ 네 n/ 알겠습니다.", SPELLING, "네 알겠습니다."),
        ("오른쪽 u/ 아파요", SPELLING, "오른쪽 아파요"),
        ("검사b/ 결과가 나왔어요", SPELLING, "검사 결과가 나왔어요"),
        ("속도는 60km/h 였어요", SPELLING, "속도는 60km/h 였어요"),
        # fillers
        ("음/ 배가 아파요", SPELLING, "음 배가 아파요"),
        ("음/ 배가 아파요", DROP_FILLERS, "배가 아파요"),
        ("어/ 그러니까 아/ 어제부터요", DROP_FILLERS, "그러니까 어제부터요"),
        ("의사/간호사 선생님", DROP_FILLERS, "의사/간호사 선생님"),
        # repetition and uncertainty
        ("머리+ 머리가 아파요", SPELLING, "머리 머리가 아파요"),
        ("혈당*을 재 볼게요", SPELLING, "혈당을 재 볼게요"),
        ("* 약을 드세요", SPELLING, "약을 드세요"),
        # punctuation and whitespace
        ("  아파요 ,  많이   아파요 ?  ", SPELLING, "아파요, 많이 아파요?"),
        ("아파요, 많이 아파요?", NO_PUNCT, "아파요 많이 아파요"),
        ("체온이 (38.5도)/(삼십팔 점 오 도)예요.", NO_PUNCT, "체온이 38.5도예요"),
        ("혈압이 (70%)/(칠십 퍼센트)!", NO_PUNCT, "혈압이 70%"),
        # annotation parentheses without a dual partner keep their content
        ("이건 (참고) 사항이에요", SPELLING, "이건 참고 사항이에요"),
        ("혈압약(아침)을 드세요", SPELLING, "혈압약아침을 드세요"),
        ("5,000원이고 1.5리터예요.", NO_PUNCT, "5,000원이고 1.5리터예요"),
        # Unicode NFC: decomposed jamo are composed
        ("\u1112\u1161\u11ab\u1100\u116e\u11a8", SPELLING, "한국"),
        # ... also when markup sat between them (a second pass must find nothing to do)
        ("\u1100(\u1161)/ 그래서", SPELLING, "가 그래서"),
        # control (Cc), zero-width, bidi and BOM (Cf) characters are removed;
        # whitespace controls become spaces
        ("배가\x00 아\x07파\x1b요", SPELLING, "배가 아파요"),
        ("\ufeff배가\u200b \u200c아\u200d파요", SPELLING, "배가 아파요"),
        ("\u202e배가 \u2066아파요\u2069", SPELLING, "배가 아파요"),
        ("배가\t아파요\r\n\x0b\x85", SPELLING, "배가 아파요"),
        ("(70\x00%)/(칠십 퍼센트)", SPELLING, "70%"),
        # + marks repetition on either side of a word; only digit+digit is content
        ("그 +그러니까", SPELLING, "그 그러니까"),
        ("그+ 그러니까", SPELLING, "그 그러니까"),
        ("1+1은 2예요", SPELLING, "1+1은 2예요"),
        # a filler word glued to the next word
        ("음/그래서 왔어요", SPELLING, "음 그래서 왔어요"),
        ("음/그래서 왔어요", DROP_FILLERS, "그래서 왔어요"),
        ("어/음/ 네", DROP_FILLERS, "네"),
        # leading punctuation left behind by markup; a decimal point stays
        (". 그래서 뭐?", SPELLING, "그래서 뭐?"),
        ("음/. 그래서 뭐?", DROP_FILLERS, "그래서 뭐?"),
        (".5리터요", SPELLING, ".5리터요"),
        # content that looks like markup
        ("on/off 버튼", SPELLING, "on/off 버튼"),
        ("100km/h로 38.5도, 5,000원 70%", SPELLING, "100km/h로 38.5도, 5,000원 70%"),
    ],
)
def test_normalize_transcript(raw: str, options: TextOptions, expected: str) -> None:
    assert normalize_transcript(raw, options) == expected
    assert normalize_transcript(expected, options) == expected  # idempotent


@pytest.mark.parametrize(
    "unit",
    [
        "가나다라",  # a long Hangul run without a slash: the filler pattern once rescanned it
        "가/",  # slashes that are not fillers
        "(가)  ",  # a dual-form candidate followed by whitespace
        "음/ b/ ",  # markup everywhere
        "가+*",
        " . ",
    ],
)
def test_normalization_is_linear_time(unit: str) -> None:
    def seconds(length: int) -> float:
        raw = (unit * (length // len(unit) + 1))[:length] + "끝"
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            with contextlib.suppress(TranscriptError):
                normalize_transcript(raw)
            best = min(best, time.perf_counter() - start)
        return best

    # 10x the input must cost about 10x the time; quadratic code would cost 100x.
    assert seconds(200_000) < 30 * seconds(20_000)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty_text"),
        ("   ", "empty_text"),
        ("b/ n/", "empty_text"),
        ("음/ .", "empty_text"),  # with --drop-fillers only a full stop is left
        ("(70%)/(칠십 퍼센트", "unbalanced_brackets"),
        ("약을 드세요)", "unbalanced_brackets"),
        ("[노이즈 약을", "unbalanced_brackets"),
        ("(괄호 [섞임)]", "unbalanced_brackets"),
    ],
)
def test_rejected_transcripts(raw: str, reason: str) -> None:
    with pytest.raises(TranscriptError) as info:
        normalize_transcript(raw, DROP_FILLERS)
    assert info.value.reason == reason


def test_unknown_text_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="text_mode"):
        normalize_transcript("안녕하세요", TextOptions(text_mode="both"))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("체온 측정".encode(), ("체온 측정", "utf-8")),
        (b"\xef\xbb\xbf" + "체온".encode(), ("체온", "utf-8")),
        ("체온 측정".encode("cp949"), ("체온 측정", "cp949")),
    ],
)
def test_decode_line(data: bytes, expected: tuple[str, str]) -> None:
    assert decode_line(data) == expected


def test_decode_line_rejects_garbage() -> None:
    with pytest.raises(UnicodeDecodeError):
        decode_line(b"\xff\xfe\xff")
