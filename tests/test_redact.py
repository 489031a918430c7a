"""voxadapt redact: Korean identifiers in every spoken and written form, medical numbers
kept, every transcript format round-tripped, audio silenced exactly where words are timed."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import srt
import webvtt

from voxadapt.errors import VoxadaptError
from voxadapt.redact import Redactor
from voxadapt.redact.evaluation import score_spans
from voxadapt.redact.patterns import load_patterns
from voxadapt.redact.spoken import number_runs, sino_value
from voxadapt.stages.redact import RedactConfig, redact

CONFIGS = Path(__file__).parents[1] / "configs"


@pytest.fixture(scope="module")
def redactor():
    return Redactor.load()


def found(redactor, text):
    return [(span.type, text[span.start : span.end]) for span in redactor.find(text)]


# (sentence, type, the identifier as it appears in the sentence)
IDENTIFIERS = [
    # phone: digits, Hangul readings, Sino groups, mixed, joined by 에/다시/hyphen, ASR spacing
    ("제 번호는 010-2345-6789입니다", "phone", "010-2345-6789"),
    ("전화번호는 공일공 이삼사오 육칠팔구예요", "phone", "공일공 이삼사오 육칠팔구"),
    (
        "핸드폰은 공일공에 이천삼백사십오에 육천칠백팔십구",
        "phone",
        "공일공에 이천삼백사십오에 육천칠백팔십구",
    ),
    ("연락처는 공일공 2345 육칠팔구로 주세요", "phone", "공일공 2345 육칠팔구"),
    ("공일 공이삼 사오육 칠팔구로 연락 주세요", "phone", "공일 공이삼 사오육 칠팔구"),
    ("집 전화는 영이 다시 칠칠칠 다시 팔팔팔팔이에요", "phone", "영이 다시 칠칠칠 다시 팔팔팔팔"),
    ("문의는 일오팔팔의 일이삼사로 하세요", "phone", "일오팔팔의 일이삼사"),
    ("번호가공일공구팔칠육오사삼이입니다", "phone", "공일공구팔칠육오사삼이"),
    # resident / foreigner registration numbers
    (
        "주민번호는 구공공일일오 다시 일이삼사오육칠이요",
        "resident_number",
        "구공공일일오 다시 일이삼사오육칠",
    ),
    ("주민등록번호 900115-1234567 맞으세요", "resident_number", "900115-1234567"),
    ("주민 등록 번호 앞자리는 팔오공삼일이예요", "resident_number", "팔오공삼일이"),
    ("외국인 등록번호는 880720-5123456입니다", "foreigner_number", "880720-5123456"),
    # insurance, patient, account, card, passport, licence
    ("건강보험증 번호는 일이삼사오육칠팔구공일이요", "insurance", "일이삼사오육칠팔구공일"),
    ("보험 번호 5 1234 567890", "insurance", "5 1234 567890"),
    ("등록번호 이삼사오육칠팔 환자분 들어오세요", "patient_number", "이삼사오육칠팔"),
    ("차트 번호는 00123456이에요", "patient_number", "00123456"),
    (
        "국민은행 계좌번호 육사오 이일 칠칠팔팔구구로 보내 주세요",
        "account",
        "육사오 이일 칠칠팔팔구구",
    ),
    ("카드번호는 4123 4567 8901 2345", "card", "4123 4567 8901 2345"),
    (
        "카드 번호는 사일이삼 사오육칠 팔구공일 이삼사오요",
        "card",
        "사일이삼 사오육칠 팔구공일 이삼사오",
    ),
    ("여권번호는 엠 일이삼사오육칠팔", "passport", "엠 일이삼사오육칠팔"),
    ("운전면허번호는 11-23-456789-01이요", "driver_licence", "11-23-456789-01"),
    # dates of birth
    ("팔십오년생이시죠", "birth_date", "팔십오년생"),
    ("85년 3월 2일생입니다", "birth_date", "85년 3월 2일생"),
    ("생년월일은 천구백칠십 년 유월 십오 일이요", "birth_date", "천구백칠십 년 유월 십오 일"),
    ("생년월일 육공공삼일오 맞으시죠", "birth_date", "육공공삼일오"),
    # e-mail
    ("메일은 kim.suji@example.co.kr 로 보내 주세요", "email", "kim.suji@example.co.kr"),
    ("이메일은 수지 골뱅이 네이버 닷컴이에요", "email", "수지 골뱅이 네이버 닷컴"),
    ("suji77 앳 지메일 점 컴으로 주세요", "email", "suji77 앳 지메일 점 컴"),
    # names: cues, honorifics, Kiwi proper nouns, ASR spacing
    ("성함이 박서윤 씨 맞으시죠", "name", "박서윤"),
    ("이름은 정하람이에요", "name", "정하람"),
    ("보호자 한지호 님 들어오세요", "name", "한지호"),
    ("윤도경 환자분 검사실로 오세요", "name", "윤도경"),
    ("담당은 최유나 간호사예요", "name", "최유나"),
    ("오늘 배정민이랑 같이 왔어요", "name", "배정민"),
    ("남궁은솔 씨 차례입니다", "name", "남궁은솔"),
    ("강 민재 님 맞으세요", "name", "강 민재"),
    # addresses: road, lot, units, Hangul numbers
    (
        "서울시 마포구 월드컵로 이백십 번지 근처예요",
        "address",
        "서울시 마포구 월드컵로 이백십 번지",
    ),
    ("경기도 성남시 분당구 정자일로 95에 살아요", "address", "경기도 성남시 분당구 정자일로 95"),
    ("주소는 역삼동 824-11번지입니다", "address", "역삼동 824-11번지"),
    ("햇살 아파트 백삼동 천이백사호에 살아요", "address", "햇살 아파트 백삼동 천이백사호"),
    ("부산 해운대구 해운대로 570번길 12 살아요", "address", "부산 해운대구 해운대로 570번길 12"),
]


@pytest.mark.parametrize(("text", "kind", "identifier"), IDENTIFIERS)
def test_identifiers_in_every_form_are_found(redactor, text, kind, identifier):
    assert (kind, identifier) in found(redactor, text)
    redacted, _ = redactor.redact_text(text)
    assert identifier not in redacted


PROTECTED = [
    "타이레놀 오백 밀리그램을 하루 세 번 드세요",
    "아목시실린 500mg 하루 3번 식후 30분에 드세요",
    "혈압이 백삼십에 팔십오로 조금 높아요",
    "혈압 130에 85, 맥박 72회, 체온 38.5도예요",
    "체온이 삼십팔 점 오 도까지 올랐어요",
    "삼일 전부터 기침을 했고 2주 뒤에 다시 오세요",
    "3일 전에 열이 났고 일주일 뒤에 검사해요",
    "일흔두 살이시고 올해 72세세요",
    "당화혈색소가 육 점 오 퍼센트고 혈당은 백이십이에요",
    "인슐린 십 단위씩 하루 두 번 맞으세요",
    "고혈압이랑 당뇨는 십 년 되셨어요",
    "내과 병동 7층 702호로 올라가세요",
    "삼 개월 뒤에 엠알아이 다시 찍어요",
    "세 알씩 하루 세 번, 일주일 치 드릴게요",
    "몸무게 68.5킬로에 키 172센티예요",
    "우리 환자분 이제 괜찮으세요",
    "오늘 환자분 컨디션 어떠세요",
    "이 선생님이 곧 오실 거예요",
    "주사로 오백 밀리그램 들어갑니다",
    "백에서 칠을 빼면 구십삼, 팔십육, 칠십구, 칠십이예요",
    "2024년 3월 2일에 수술했어요",
    "심근경색 협심증 부정맥 심부전 모두 없으세요",
]


@pytest.mark.parametrize("text", PROTECTED)
def test_medical_content_is_kept(redactor, text):
    assert found(redactor, text) == []
    assert redactor.redact_text(text)[0] == text


@pytest.mark.parametrize(
    ("word", "value"),
    [("팔십오", 85), ("천이백삼십사", 1234), ("백", 100), ("이천이십사", 2024), ("십십", None)],
)
def test_sino_numbers(word, value):
    assert sino_value(word) == value


def test_words_that_start_with_digit_syllables_are_no_numbers():
    assert number_runs("사람이 오늘 이상하게 구토를 했어요") == []
    (run,) = number_runs("공일공에 일이삼사 오육칠팔이에요")
    assert run.digits == "01012345678"


def test_tag_types_and_keep_types():
    text = "김하늘 씨 번호는 010-1234-5678이고 85년생이에요"
    only_phone = Redactor.load(types=["phone"])
    assert only_phone.redact_text(text)[0] == "김하늘 씨 번호는 [전화번호]이고 85년생이에요"
    masked = Redactor.load(keep_types=["이름"], tag="***")
    assert masked.redact_text(text)[0] == "김하늘 씨 번호는 ***이고 ***이에요"
    keyed = Redactor.load(tag="<{key}>")
    assert keyed.redact_text(text)[0] == "<name> 씨 번호는 <phone>이고 <birth_date>이에요"
    with pytest.raises(VoxadaptError, match="unknown type 'zip'"):
        Redactor.load(types=["zip"])


def test_patterns_file_adds_cues_and_written_forms(tmp_path):
    shipped = load_patterns(CONFIGS / "redact-patterns.yml")
    assert "등록번호" in shipped.cues and shipped.patterns
    custom = tmp_path / "p.yml"
    custom.write_text(
        "patient_number:\n  cues: [병원 아이디]\n  min_digits: 4\n  max_digits: 6\n"
        "  patterns:\n    - name: mrn\n      regex: 'MRN\\d{5}'\n",
        encoding="utf-8",
    )
    hospital = Redactor.load(patterns=custom)
    text = "병원 아이디는 사오육칠이고 MRN12345 입니다"
    assert found(hospital, text) == [
        ("patient_number", "사오육칠"),
        ("patient_number", "MRN12345"),
    ]
    custom.write_text("patient_number:\n  min_digits: 0\n", encoding="utf-8")
    with pytest.raises(VoxadaptError, match="min_digits"):
        load_patterns(custom)


SAID = "성함이 박서윤 씨고 번호는 공일공 이삼사오 육칠팔구예요 혈압은 백삼십에 팔십오"
ROW = {
    "id": "visit1",
    "audio": "visit1.wav",
    "text": SAID,
    "segments": [
        {"start": 0.0, "end": 4.0, "text": "성함이 박서윤 씨고 번호는 공일공"},
        {"start": 4.0, "end": 8.0, "text": "이삼사오 육칠팔구예요 혈압은 백삼십에 팔십오"},
    ],
    "words": [
        {"word": w, "start": 0.5 * i, "end": 0.5 * i + 0.4} for i, w in enumerate(SAID.split(" "))
    ],
}


def test_row_text_segments_and_words_agree(redactor):
    redacted, records = redactor.redact_row(ROW)
    assert redacted["text"] == "성함이 [이름] 씨고 번호는 [전화번호]예요 혈압은 백삼십에 팔십오"
    assert [s["text"] for s in redacted["segments"]] == [
        "성함이 [이름] 씨고 번호는 [전화번호]",
        "예요 혈압은 백삼십에 팔십오",
    ]
    assert [(s["start"], s["end"]) for s in redacted["segments"]] == [(0.0, 4.0), (4.0, 8.0)]
    assert " ".join(w["word"] for w in redacted["words"]) == redacted["text"]
    phone = next(w for w in redacted["words"] if "[전화번호]" in w["word"])
    assert (phone["start"], phone["end"]) == (2.0, 3.4)  # 공일공 .. 육칠팔구예요
    assert {(r["type"], r["field"], r["start_s"], r["end_s"]) for r in records} == {
        ("name", "text", 0.5, 0.9),
        ("phone", "text", 2.0, 3.4),
    }
    assert ROW["text"].startswith("성함이 박서윤")  # the input row is not changed


SRT_TEXT = """1
00:00:00,000 --> 00:00:02,500
성함이 박서윤 씨 맞으시죠

2
00:00:02,500 --> 00:00:05,000
네 번호는 공일공 이삼사오
육칠팔구예요

3
00:00:05,000 --> 00:00:07,250
혈압은 백삼십에 팔십오예요
"""

VTT_TEXT = """WEBVTT

00:00:00.000 --> 00:00:02.500
주민번호는 구공공일일오 다시

00:00:02.500 --> 00:00:05.000 align:start
일이삼사오육칠이요

00:00:05.000 --> 00:00:07.000
타이레놀 오백 밀리그램 드세요
"""


def write_inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "jsonl": folder / "transcripts.jsonl",
        "tsv": folder / "ids.txt",
        "text": folder / "notes.txt",
        "srt": folder / "visit.srt",
        "vtt": folder / "visit.vtt",
    }
    files["jsonl"].write_text(json.dumps(ROW, ensure_ascii=False) + "\n", encoding="utf-8")
    files["tsv"].write_text(
        "u1\t제 번호는 010-2345-6789입니다\nu2\t하루 세 번 드세요\n", encoding="utf-8"
    )
    files["text"].write_text(
        "보호자 한지호 님 오셨어요\n연락처는 공일공 이삼사오\n육칠팔구예요\n", encoding="utf-8"
    )
    files["srt"].write_text(SRT_TEXT, encoding="utf-8")
    files["vtt"].write_text(VTT_TEXT, encoding="utf-8")
    return files


def test_every_format_keeps_its_structure_and_times(tmp_path):
    files = write_inputs(tmp_path / "in")
    result = redact(RedactConfig(inputs=list(files.values()), out_dir=tmp_path / "out"))
    out = tmp_path / "out"
    assert result.counts == {"name": 3, "phone": 4, "resident_number": 1}

    (row,) = [json.loads(line) for line in (out / "transcripts.jsonl").read_text().splitlines()]
    assert set(row) == set(ROW) and row["segments"][1]["end"] == 8.0

    ids = (out / "ids.txt").read_text()
    assert ids == "u1\t제 번호는 [전화번호]입니다\nu2\t하루 세 번 드세요\n"
    notes = (out / "notes.txt").read_text().split("\n")
    assert notes == ["보호자 [이름] 님 오셨어요", "연락처는 [전화번호]", "예요", ""]

    before = list(srt.parse(SRT_TEXT))
    after = list(srt.parse((out / "visit.srt").read_text()))
    assert [(c.index, c.start, c.end) for c in after] == [(c.index, c.start, c.end) for c in before]
    assert [c.content for c in after] == [
        "성함이 [이름] 씨 맞으시죠",
        "네 번호는 [전화번호]예요",  # a span across a cue's lines joins them
        "혈압은 백삼십에 팔십오예요",
    ]
    before_vtt = webvtt.from_buffer(__import__("io").StringIO(VTT_TEXT))
    after_vtt = webvtt.read(out / "visit.vtt")
    assert [(c.start, c.end) for c in after_vtt] == [(c.start, c.end) for c in before_vtt]
    assert [c.text for c in after_vtt] == [
        "주민번호는 [주민등록번호]",
        "이요",  # the rest of the number the cue break cut is removed with it
        "타이레놀 오백 밀리그램 드세요",
    ]
    assert "align:start" in (out / "visit.vtt").read_text()


def test_redactions_never_hold_the_original_text(tmp_path):
    files = write_inputs(tmp_path / "in")
    redact(RedactConfig(inputs=list(files.values()), out_dir=tmp_path / "out"))
    records = [
        json.loads(line)
        for line in (tmp_path / "out" / "redactions.jsonl").read_text().splitlines()
    ]
    assert records and all(
        set(r)
        <= {"id", "field", "type", "start", "end", "detector", "start_s", "end_s", "continued"}
        for r in records
    )
    everything = (tmp_path / "out").joinpath("redactions.jsonl").read_text()
    everything += (tmp_path / "out" / "redact_summary.json").read_text()
    for secret in ("박서윤", "한지호", "공일공", "2345", "구공공일일오", "이삼사오"):
        assert secret not in everything
        for path in (tmp_path / "out").iterdir():
            if path.is_file():
                assert secret not in path.read_text(), path


def test_bad_inputs_give_one_line_errors(tmp_path):
    files = write_inputs(tmp_path / "in")
    with pytest.raises(VoxadaptError, match="does not exist"):
        RedactConfig(inputs=[tmp_path / "missing.jsonl"], out_dir=tmp_path / "out")
    latin1 = tmp_path / "in" / "latin1.txt"
    latin1.write_bytes("caf\xe9 \xe0".encode("latin-1"))
    with pytest.raises(VoxadaptError, match="not UTF-8"):
        redact(RedactConfig(inputs=[latin1], out_dir=tmp_path / "out"))
    broken = tmp_path / "in" / "broken.jsonl"
    broken.write_text('{"text": "ok"}\n{not json\n', encoding="utf-8")
    with pytest.raises(VoxadaptError, match=r"broken.jsonl:2: not valid JSON"):
        redact(RedactConfig(inputs=[broken], out_dir=tmp_path / "out"))
    with pytest.raises(VoxadaptError, match="contain the input"):
        redact(RedactConfig(inputs=[files["srt"]], out_dir=tmp_path / "in"))
    with pytest.raises(VoxadaptError, match="unknown"):
        RedactConfig(inputs=[files["srt"]], out_dir=tmp_path / "o", types=["zip"])
    assert not (tmp_path / "out" / "broken.jsonl").exists()


def test_cli_end_to_end_with_stdin_and_gold(tmp_path):
    gold = tmp_path / "gold.jsonl"
    text = "제 이름은 정하람이고 번호는 공일공 이삼사오 육칠팔구예요"
    gold.write_text(
        json.dumps(
            {
                "text": text,
                "spans": [
                    {"start": 6, "end": 9, "type": "name"},
                    {"start": 16, "end": 29, "type": "전화번호"},
                ],
            },
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    run = subprocess.run(
        [sys.executable, "-m", "voxadapt.cli", "redact", "-", "--out", str(tmp_path / "out"),
         "--gold", str(gold)],
        input=text + "\n",
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "전화번호" in run.stdout and "recall" in run.stdout
    redacted = (tmp_path / "out" / "stdin.txt").read_text()
    assert redacted == "제 이름은 [이름]이고 번호는 [전화번호]예요\n"
    evaluation = json.loads((tmp_path / "out" / "redact_eval.json").read_text())
    assert evaluation["by_type"]["phone"]["recall"] == 1.0
    assert evaluation["by_type"]["all"]["precision"] == 1.0
    again = subprocess.run(
        [sys.executable, "-m", "voxadapt.cli", "redact", str(tmp_path / "nope.srt"), "--out",
         str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1 and "does not exist" in again.stderr


def test_character_scores():
    from voxadapt.redact import Span

    text = "번호는 공일공 일이삼사"
    report = score_spans([(text, [("phone", 4, 12)], [Span("phone", 4, 7, "x")])])
    assert report["phone"]["recall"] == pytest.approx(3 / 7)
    assert report["phone"]["precision"] == 1.0


def test_audio_redaction_silences_exactly_the_timed_spans(tmp_path):
    rate = 16000
    seconds = np.arange(rate * 6) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * seconds)).astype(np.float32)
    wav = tmp_path / "in" / "visit1.wav"
    wav.parent.mkdir()
    sf.write(wav, tone, rate, subtype="PCM_16")
    original, _ = sf.read(wav, dtype="float32")
    row = {**ROW, "audio": str(wav)}
    untimed = {"id": "visit2", "audio": str(wav), "text": "번호는 공일공 이삼사오 육칠팔구예요"}
    manifest = tmp_path / "in" / "rows.jsonl"
    manifest.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in (row, untimed)),
        encoding="utf-8",
    )
    result = redact(
        RedactConfig(inputs=[manifest], out_dir=tmp_path / "out", audio=True, audio_margin_s=0.1)
    )
    assert result.audio_untimed == ["visit2"]
    (written,) = result.audio_written
    silenced, out_rate = sf.read(written, dtype="float32")
    assert out_rate == rate and len(silenced) == len(original)
    inside = np.zeros(len(original), dtype=bool)
    for start, end in ((0.5, 0.9), (2.0, 3.4)):  # 박서윤; 공일공 .. 육칠팔구예요
        inside[int((start - 0.1) * rate) : int(np.ceil((end + 0.1) * rate))] = True
    assert np.all(silenced[inside] == 0)
    assert np.array_equal(silenced[~inside], original[~inside])
    summary = json.loads((tmp_path / "out" / "redact_summary.json").read_text())
    assert summary["audio_without_word_times"] == ["visit2"]


def test_transcribe_redact_equals_redact_of_the_plain_output(tmp_path, monkeypatch, tiny_model):
    from voxadapt.decoding import Transcript
    from voxadapt.stages import transcribe as stage

    said = "보호자 한지호 님 번호는 공일공 이삼사오 육칠팔구예요 하루 세 번 드세요"

    class Spoken:
        def transcribe(self, items, options, on_token=None, **kwargs):
            yield [(item, Transcript(said, None, 12, False, None)) for item in items]

    monkeypatch.setattr(stage.TranscribeConfig, "load_transcriber", lambda self: Spoken())
    wav = tmp_path / "call.wav"
    sf.write(wav, np.zeros(16000, dtype=np.float32), 16000)
    plain, redacted = tmp_path / "plain.jsonl", tmp_path / "redacted.jsonl"
    model = str(tiny_model)
    stage.transcribe(stage.TranscribeConfig(inputs=[wav], out=plain, model=model))
    stage.transcribe(stage.TranscribeConfig(inputs=[wav], out=redacted, model=model, redact=True))
    redact(RedactConfig(inputs=[plain], out_dir=tmp_path / "deid"))
    assert (tmp_path / "deid" / "plain.jsonl").read_text() == redacted.read_text()
    assert "[전화번호]" in redacted.read_text() and "한지호" not in redacted.read_text()


def test_a_cue_or_line_is_never_left_empty(redactor):
    from voxadapt.redact.files import redact_parts

    parts = redact_parts(redactor, ["번호는 공일공 이삼사오", "육칠팔구"])
    assert [text for text, _ in parts] == ["번호는 [전화번호]", "[전화번호]"]
    assert parts[1][1][0].detector.startswith("continued:")
