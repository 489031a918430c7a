"""Evaluation report: summaries, headline cards, inputs, speakers, worst utterances with players,
Korean fonts in the page and in plots, plot layout, and the page in headless Chromium."""

import base64
import io
import json
import re
import shutil
import warnings
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import matplotlib
import pytest
from fontTools.ttLib import TTFont
from matplotlib import font_manager
from matplotlib.text import Text

from voxadapt import units
from voxadapt.fonts import korean_font_file, plot_style
from voxadapt.manifest import Utterance, write_jsonl
from voxadapt.plots import cer_bar_figure, plot_cer_by_duration, plot_cer_by_group
from voxadapt.report import format_metrics_summary
from voxadapt.report_html import audio_link, write_report
from voxadapt.scoring.metrics import compute_metrics
from voxadapt.scoring.rates import score_row
from voxadapt.stages.score import ScoreConfig, score
from voxadapt.text import normalize_transcript, transcript_variants

from conftest import CLIPS


def scored_rows(pairs, durations):
    return [
        {"id": f"u{i}", "speaker": f"s{i % 3}", "duration": seconds, **score_row(ref, hyp)}
        for i, ((ref, hyp), seconds) in enumerate(zip(pairs, durations, strict=True))
    ]


# ------------------------------------------------------------------------- reading the page


class Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children = tag, dict(attrs), parent, []

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def find_all(self, tag=None, cls=None, **attrs):
        for child in self.children:
            if isinstance(child, Node):
                if (
                    (tag is None or child.tag == tag)
                    and (cls is None or cls in child.classes())
                    and all(child.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
                ):
                    yield child
                yield from child.find_all(tag, cls, **attrs)

    def find(self, tag=None, cls=None, **attrs):
        return next(self.find_all(tag, cls, **attrs), None)


VOID_ELEMENTS = {"meta", "br", "img", "source", "input", "hr", "link"}


class TreeBuilder(HTMLParser):
    """A DOM of the report, enough to find elements by tag, class and attributes."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#document", {})

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.current)
        self.current.children.append(node)
        if tag not in VOID_ELEMENTS:
            self.current = node

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Node(tag, attrs, self.current))

    def handle_endtag(self, tag):
        node = self.current
        while node.parent is not None and node.tag != tag:
            node = node.parent
        assert node.tag == tag, f"unbalanced </{tag}>"
        self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse(html: str) -> Node:
    builder = TreeBuilder()
    builder.feed(html)
    builder.close()
    assert builder.current is builder.root, "unclosed elements"
    return builder.root


def table_rows(table: Node) -> list[list[str]]:
    return [[cell.text for cell in row.find_all("td")] for row in table.find_all("tr")][1:]


# ---------------------------------------------------------------- a scored run to look at

ROLES = {"의사": "doctor", "환자": "patient", "간호사": "nurse"}
REFERENCES = [  # (raw transcript, role, hypothesis; None: no hypothesis)
    ("환자분, 오늘 아침에 혈압약은 드셨어요?", "의사", "환자분 오늘 아침에 혈압약은 드셨어요"),
    ("가슴 통증이 언제부터 시작되었나요?", "의사", "가슴 통정이 언제부터 시작됐나요"),
    (
        "체온이 (38도)/(삼십팔 도)로 올라서 해열제를 투여했습니다.",
        "간호사",
        "체온이 삼십팔 도로 올라서 해열제를 투여했습니다",
    ),
    ("내일 오전에 복부 초음파 검사가 있습니다.", "간호사", "내일 오전에 복부 초음파 검사가"),
    ("어제 저녁부터 배가 아파요", "환자", "어제 저녁부터 배가"),
    ("숨을 크게 쉬세요", "의사", "숨을 크게 쉬세"),
    ("네 약은 먹었어요", "환자", None),
    ("혈압을 재겠습니다", "간호사", "혈압을 재겠습니다"),
]
SEGMENT = "utt05"  # a segment of a longer recording: 0.5 s into its clip


@pytest.fixture
def scored(tmp_path):
    """`voxadapt score` of 8 utterances (5 speakers, a role each, real clips, one segment, one
    dual transcription, one missing and one unknown hypothesis) with --compare and --terms."""
    return score_run(tmp_path)


def score_run(tmp_path, speakers: int | None = 5):
    """The `scored` run with `speakers` speakers (None: no speaker labels)."""
    utterances = [
        Utterance(
            f"utt{i:02d}",
            str(CLIPS[i % len(CLIPS)]),
            normalize_transcript(raw),
            raw,
            3.0 + i,
            16000,
            1,
            speaker=f"spk{i % speakers}" if speakers else None,
            text_variants=transcript_variants(raw) if "(" in raw else None,
            offset=0.5 if f"utt{i:02d}" == SEGMENT else None,
            metadata={"role": role},
        )
        for i, (raw, role, _) in enumerate(REFERENCES)
    ]
    manifest = tmp_path / "test.jsonl"
    write_jsonl(manifest, utterances)
    hypotheses = {u.id: h for u, (_, _, h) in zip(utterances, REFERENCES, strict=True) if h}
    other = {u.id: u.text for u in utterances}  # a perfect other system
    files = {}
    for name, pairs in (("hyp.txt", {**hypotheses, "x99": "모르는 발화"}), ("other.txt", other)):
        files[name] = tmp_path / name
        files[name].write_text("".join(f"{k} {v}\n" for k, v in pairs.items()), encoding="utf-8")
    terms = tmp_path / "terms.txt"
    terms.write_text("혈압약\n통증\n초음파\n해열제\n", encoding="utf-8")
    config = ScoreConfig(
        manifest,
        files["hyp.txt"],
        tmp_path / "runs" / "scored",
        compare=files["other.txt"],
        terms=terms,
        bootstrap=200,
    )
    return score(config)


# -------------------------------------------------------------------------------- summaries

# metrics.json read back by a tool that sorted its keys: buckets in string order
BY_DURATION = {
    "0-5 s": {"utterances": 2, "cer": 0.1, "wer": 0.2, "swer": 0.1, "ser": 0.5},
    "10-15 s": {"utterances": 1, "cer": None, "wer": None, "swer": None, "ser": 1.0},
    "5-10 s": {"utterances": 3, "cer": 0.3, "wer": 0.4, "swer": 0.3, "ser": 1.0},
}


def test_summary_shows_undefined_rates_as_na():
    metrics = {
        "utterances": 2,
        "reference_characters": 0,
        "cer": None,
        "wer": None,
        "ser": 0.5,
        "insertion_rate": None,
        "term_recall": {"terms": 3, "occurrences": 0, "hits": 0, "recall": None},
        "compare": {"utterances": 2, "this": None, "other": 0.1, "delta": None},
    }
    summary = format_metrics_summary(metrics)
    lines = {line.split("  ")[0]: line for line in summary.splitlines()}
    assert lines["CER (no spaces)"].split()[-1] == "n/a"
    assert lines["sentence error rate"].split()[-1] == "50.00%"
    assert "medical term recall n/a (0/0 occurrences of 3 terms)" in summary
    assert "CER n/a vs 10.00%, Δ n/a on 2 shared utterances" in summary


def test_summary_shows_ci_and_p_value():
    metrics = {
        "utterances": 4,
        "reference_characters": 40,
        "cer": 0.1,
        "cer_ci95": [0.05, 0.2],
        "compare": {
            "utterances": 4,
            "this": 0.1,
            "other": 0.2,
            "delta": -0.1,
            "ci": [-0.15, -0.05],
            "p_value": 0.01,
        },
    }
    summary = format_metrics_summary(metrics)
    assert "[5.00%, 20.00%]" in summary
    assert "Δ -10.00 points, 95% CI [-15.00, -5.00] points, p=0.010" in summary


# ---------------------------------------------------------------------------------- cards


def cards_of(html: str) -> dict[str, Node]:
    cards = parse(html).find("div", cls="cards")
    return {card.attrs["data-metric"]: card for card in cards.find_all("div", cls="card")}


def test_score_report_opens_with_cards_in_people_units(scored):
    metrics = scored.metrics
    html = scored.report.read_text(encoding="utf-8")
    cards = cards_of(html)
    assert list(cards) == ["cer", "cer_multi_reference", "wer", "term_recall", "compare"]
    for key in ("cer", "wer"):
        assert cards[key].find(cls="value").text == units.percent(metrics[key])
        details = [d.text for d in cards[key].find_all(cls="detail")]
        assert f"95% CI {units.percent_interval(metrics[f'{key}_ci95'])}" in details
    multi = cards["cer_multi_reference"].find(cls="value").text
    assert multi == units.percent(metrics["cer_multi_reference"])
    recall = metrics["term_recall"]
    assert cards["term_recall"].find(cls="value").text == units.percent(recall["recall"])
    assert f"{recall['hits']} of {recall['occurrences']} term" in cards["term_recall"].text
    # the comparison in points, with its CI and p-value; here worse than a perfect system
    compare = metrics["compare"]
    assert compare["delta"] > 0 and compare["ci"][0] > 0
    card = cards["compare"]
    assert card.find(cls="value").text == units.points(compare["delta"])
    ci = f"95% CI {units.points_interval(compare['ci'])}, {units.p_value(compare['p_value'])}"
    assert ci in [d.text for d in card.find_all(cls="detail")]
    assert "worse" in card.classes() and "CER vs other.txt" in card.text
    # the cards come first; the terminal table only at the end
    assert html.index("class='cards'") < html.index("<h2>") < html.index("<pre>")


@pytest.mark.parametrize(
    ("interval", "p_value", "tone", "verdict"),
    [
        ([-0.05, -0.01], 0.0004, "better", "lower CER"),
        ([-0.02, 0.01], 0.4, None, "no clear difference"),
        (None, None, None, "no CI"),
    ],
)
def test_compare_card_verdicts_and_given_intervals(tmp_path, interval, p_value, tone, verdict):
    metrics = {
        "utterances": 10,
        "cer": 0.1,
        "cer_ci95": [0.08, 0.12],
        "multi_reference_utterances": 2,
        "cer_multi_reference": 0.09,
        "cer_multi_reference_ci95": [0.07, 0.11],
        "term_recall": {"terms": 2, "occurrences": 4, "hits": 3, "recall": 0.75},
        "compare": {"utterances": 10, "this": 0.1, "other": 0.13, "delta": -0.03},
        "compare_hypotheses": "runs/eval-base/predictions.jsonl",
    }
    metrics["term_recall"]["ci95"] = [0.5, 1.0]
    if interval:
        metrics["compare"].update(ci=interval, p_value=p_value)
    cards = cards_of(write_report(tmp_path / "r.html", metrics, []).read_text(encoding="utf-8"))
    assert "95% CI [7.00%, 11.00%]" in cards["cer_multi_reference"].text
    assert "95% CI [50.00%, 100.00%]" in cards["term_recall"].text
    assert "95% CI n/a" in cards["wer"].text  # no interval in metrics.json: said so
    card = cards["compare"]
    assert card.find(cls="value").text == "-3.00 points"
    assert card.find(cls="label").text == "CER vs eval-base/predictions.jsonl"  # the run
    assert verdict in card.text
    assert "p n/a" not in card.text  # no interval: no CI line at all
    assert ({"better", "worse"} & card.classes()) == ({tone} if tone else set())
    if p_value is not None and p_value < 0.001:
        assert "p<0.001" in card.text


# ------------------------------------------------------------ one interval rule: 5 speakers

DEGENERATE = re.compile(r"\[(-?\d+\.\d+%?), \1( points)?\]")  # [40.00%, 40.00%]


def test_two_speakers_get_no_interval_in_report_summary_or_json(tmp_path):
    result = score_run(tmp_path, speakers=2)
    metrics = json.loads(result.metrics_path.read_text(encoding="utf-8"))
    assert not [key for key in metrics if key.endswith("_ci95")]
    assert metrics["bootstrap"]["speakers"] == 2
    assert metrics["bootstrap"]["no_intervals"] == "fewer than 5 speakers"
    assert "ci95" not in metrics["term_recall"]
    assert metrics["term_recall"]["no_interval"] == "fewer than 5 speakers"
    assert "ci" not in metrics["compare"] and metrics["compare"]["too_few_speakers"] == 2
    html = result.report.read_text(encoding="utf-8")
    cards = cards_of(html)
    for key in ("cer", "cer_multi_reference", "wer", "term_recall"):
        assert "95% CI n/a (fewer than 5 speakers: 2)" in cards[key].text, key
    assert metrics["term_recall"]["speakers"] == 2
    assert "no CI (fewer than 5 speakers: 2)" in cards["compare"].text
    summary = format_metrics_summary(metrics)
    lines = {line.split("  ")[0]: line for line in summary.splitlines()}
    assert lines["CER (no spaces)"].split()[-1] == "—"
    assert "— 95% CI n/a (fewer than 5 speakers: 2)" in summary
    assert "medical term recall 75.00%, 95% CI n/a (fewer than 5 speakers: 2)" in summary
    assert not DEGENERATE.search(html) and not DEGENERATE.search(summary)


def test_five_speakers_get_intervals_in_report_summary_and_json(tmp_path):
    result = score_run(tmp_path, speakers=5)
    metrics = json.loads(result.metrics_path.read_text(encoding="utf-8"))
    assert metrics["bootstrap"]["speakers"] == 5 and metrics["bootstrap"]["no_intervals"] is None
    low, high = metrics["cer_ci95"]
    assert low <= metrics["cer"] <= high and low < high
    assert "ci" in metrics["compare"]
    recall = metrics["term_recall"]  # its own speakers: those of the utterances with a term
    assert ("ci95" in recall) == (recall["speakers"] >= 5) != ("no_interval" in recall)
    cards = cards_of(result.report.read_text(encoding="utf-8"))
    assert f"95% CI {units.percent_interval(metrics['cer_ci95'])}" in cards["cer"].text
    assert "n/a" not in cards["cer"].text
    summary = format_metrics_summary(metrics)
    assert units.percent_interval(metrics["cer_ci95"]) in summary and "—" not in summary


# ------------------------------------------------------------------- inputs and speakers


def test_score_report_names_its_inputs_and_the_unscored_rows(scored):
    page = parse(scored.report.read_text(encoding="utf-8"))
    inputs = page.find("dl", cls="inputs")
    assert str(Path(scored.metrics["hypotheses"])) in inputs.text
    assert "other.txt" in inputs.text and "test.jsonl" in inputs.text
    assert page.find("h1").text == "Scores of hyp.txt"
    missing = page.find("p", data_check="missing")
    assert "1 of 8 utterances has no hypothesis" in missing.text and "utt06" in missing.text
    unknown = page.find("p", data_check="unknown")
    assert "1 hypothesis has an id the manifest does not know" in unknown.text
    assert "x99" in unknown.text


def test_speaker_table_is_worst_first_and_capped(tmp_path):
    pairs = [("가나다라마바사아자차", "가나다라마바사아자차"[: 10 - i % 10]) for i in range(60)]
    rows = [
        {"id": f"u{i:02d}", "speaker": f"s{i:02d}", "duration": 2.0, **score_row(ref, hyp)}
        for i, (ref, hyp) in enumerate(pairs)
    ]
    metrics = compute_metrics(rows, bootstrap=0)
    html = write_report(tmp_path / "r.html", metrics, rows, speakers=50).read_text("utf-8")
    page = parse(html)
    shown = table_rows(page.find("table", cls="speakers"))
    assert len(shown) == 50
    rates = [float(row[3].rstrip("%")) for row in shown]
    assert rates == sorted(rates, reverse=True) and rates[0] == 90.0
    assert page.find("p", data_check="more-speakers").text.startswith("… and 10 more speakers")


# ------------------------------------------------------------------------ worst utterances


def test_worst_utterances_are_sorted_and_play_their_clips(scored):
    report = scored.report
    page = parse(report.read_text(encoding="utf-8"))
    rows = table_rows(page.find("table", cls="worst"))
    rates = [float(r[2].rstrip("%")) for r in rows]
    assert rates == sorted(rates, reverse=True)
    assert 0.0 not in rates and "utt07" not in [r[0] for r in rows]  # correct: not listed
    by_id = {r["id"]: r for r in map(_json, scored.predictions.read_text("utf-8").splitlines())}
    assert len(rows) == sum(r["scores"]["cer"]["substitutions"] > -1 for r in by_id.values()) - 2
    players = list(page.find("table", cls="worst").find_all("audio"))
    assert len(players) == len(rows)
    for row, player in zip(rows, players, strict=True):
        ident = re.match(r"utt\d+", row[0]).group()
        assert row[1] == by_id[ident]["speaker"]
        assert "controls" in player.attrs
        src = player.attrs["src"]
        assert not src.startswith(("/", "file:"))  # relative to the report's folder
        path, _, fragment = src.partition("#")
        assert (report.parent / unquote(path)).resolve() == Path(by_id[ident]["audio"]).resolve()
        expected = "t=0.500,8.500" if ident == SEGMENT else ""  # 0.5 s + 8 s of the clip
        assert fragment == expected
    assert "no hypothesis" in rows[0][0]  # utt06: every character deleted, 100%
    cells = page.find("table", cls="worst").find_all("td", cls="align")
    assert any(c.find("span", cls="sub") for c in cells)  # the colored alignments stay
    assert any(c.find("span", cls="del") for c in cells)


def test_worst_utterances_omit_an_empty_speaker_column(tmp_path):
    page = parse(score_run(tmp_path, speakers=None).report.read_text(encoding="utf-8"))
    worst = page.find("table", cls="worst")
    assert "speaker" not in [th.text for th in worst.find_all("th")]
    assert not list(worst.find_all("td", cls="speaker"))
    assert len(table_rows(worst)[0]) == 4  # id, CER, listen, alignment


def _json(line):
    import json

    return json.loads(line)


def test_audio_link_is_relative_and_quoted(tmp_path):
    clip = tmp_path / "audio" / "환자 1.wav"
    row = {"audio": str(clip), "offset": 12.25, "duration": 3.5}
    assert audio_link(row, tmp_path / "runs" / "eval") == (
        "../../audio/%ED%99%98%EC%9E%90%201.wav#t=12.250,15.750"
    )
    assert audio_link({"audio": str(clip), "offset": None}, tmp_path) == (
        "audio/%ED%99%98%EC%9E%90%201.wav"
    )
    assert audio_link({}, tmp_path) is None


def test_report_orders_durations_and_shows_na(tmp_path):
    metrics = {"utterances": 6, "breakdowns": {"duration": BY_DURATION}}
    html = write_report(tmp_path / "report.html", metrics, []).read_text(encoding="utf-8")
    table = html[html.index("<h2>By duration</h2>") :]
    assert table.index("<td>0-5 s</td>") < table.index("<td>5-10 s</td>")
    assert table.index("<td>5-10 s</td>") < table.index("<td>10-15 s</td>")
    assert '<td class="num">n/a</td>' in table


def test_report_from_computed_metrics(tmp_path):
    pairs = [
        ("가슴 통증이 심해요", "가슴 통종이 심해요"),
        ("통증이 있어요", "통종이 있어요 네"),
        ("", "네 네"),  # an empty reference: no rate, listed first
        ("혈압약 드세요", "혈압 드세요"),
        ("내일 오세요", "내일 오세요"),
        ("오늘 아침에 혈압약은 드셨어요", "오늘 아침에 혈합약은 드셨어여"),  # 2 of 13
    ]
    rows = scored_rows(pairs, [12.0, 3.0, 1.0, 7.0, 31.0, 4.0])
    metrics = compute_metrics(rows, terms=[("고혈압",), ("통증",)], bootstrap=50)
    assert list(metrics["breakdowns"]["duration"]) == ["0-5 s", "5-10 s", "10-15 s", "30+ s"]
    html = write_report(tmp_path / "report.html", metrics, rows).read_text(encoding="utf-8")
    assert "<h2>Most frequent errors</h2>" in html
    assert '<td>증 → 종</td><td class="num">2</td>' in html  # characters
    assert '<td>통증이 → 통종이</td><td class="num">2</td>' in html  # eojeol
    worst = table_rows(parse(html).find("table", cls="worst"))
    # by CER, not by error count: n/a, 2/6, 1/6, 2/13, 1/8; u4 (no error) left out
    assert [r[0] for r in worst] == ["u2", "u1", "u3", "u5", "u0"]
    assert worst[0][2] == "n/a"
    assert "Most-missed medical terms" in html


def test_report_without_errors_has_no_error_table(tmp_path):
    rows = scored_rows([("내일 오세요", "내일 오세요")], [2.0])
    metrics = compute_metrics(rows, bootstrap=0)
    html = write_report(tmp_path / "report.html", metrics, rows).read_text(encoding="utf-8")
    assert "Most frequent errors" not in html
    assert "without error" in html and "class='worst'" not in html
    assert metrics["cer"] == pytest.approx(0.0)


# ------------------------------------------------------------------------- Korean fonts

GROUPS = {
    "의사": {"utterances": 3, "cer": 0.08},
    "환자": {"utterances": 2, "cer": 0.55},
    "간호사": {"utterances": 3, "cer": None},
}


def test_plots_draw_hangul_with_the_bundled_font():
    """Without a Korean font matplotlib draws boxes and warns 'Glyph ... missing'; the glyph
    ids in the SVG name the font each character was drawn with."""
    assert korean_font_file() is not None, "koreanize-matplotlib is a dependency"
    before = dict(matplotlib.rcParams)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        svg = plot_cer_by_group(GROUPS, title="CER by role", xlabel="역할")
    assert not [w for w in caught if "missing from" in str(w.message)]
    font = TTFont(korean_font_file(), lazy=True)
    for character in "의사환자간호역할":
        glyph = font.getGlyphID(font.getBestCmap()[ord(character)])
        # glyph ids: font-glyph index (matplotlib >= 3.10) or font-character code (before)
        ids = {f"NanumGothic-{glyph:x}", f"NanumGothic-{ord(character):x}"}
        assert any(f'id="{i}"' in svg for i in ids), character
    with plot_style():
        chosen = font_manager.findfont(font_manager.FontProperties(family=["sans-serif"]))
    assert Path(chosen).name == "NanumGothic.ttf"
    assert dict(matplotlib.rcParams) == before  # no global side effects


def test_cer_by_duration_plot_is_in_numeric_order():
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # labels as text, not paths
        svg = plot_cer_by_duration(BY_DURATION)
    assert svg.index("0-5 s") < svg.index("5-10 s") < svg.index("10-15 s")
    assert "n=1, n/a" in svg


@pytest.mark.parametrize("count", [3, 14])
def test_plot_labels_stay_inside_the_figure(count):
    groups = {f"서울특별시 강남구 {i}번 병동": {"utterances": i, "cer": 0.9} for i in range(count)}
    if count == 3:
        groups = GROUPS
    with plot_style():
        figure = cer_bar_figure(groups, title="CER by ward", xlabel="ward")
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        drawn = figure.get_tightbbox(renderer)  # every drawn artist, in inches
        frame = figure.bbox_inches
        assert drawn.x0 >= -0.01 and drawn.y0 >= -0.01, (drawn, frame)
        assert drawn.x1 <= frame.x1 + 0.01 and drawn.y1 <= frame.y1 + 0.01, (drawn, frame)
        labels = [t.get_text() for t in figure.findobj(Text) if t.get_visible()]
        assert all(name in labels for name in groups)  # every label drawn, none dropped
        rotation = figure.axes[0].get_xticklabels()[0].get_rotation()
    matplotlib.pyplot.close(figure)
    assert (rotation > 0) == (count > 8)


def test_report_embeds_the_korean_glyphs_it_uses(scored):
    html = scored.report.read_text(encoding="utf-8")
    style = parse(html).find("style").text
    for family in ('"Malgun Gothic"', '"Apple SD Gothic Neo"', '"Noto Sans CJK KR"', "sans-serif"):
        assert family in style
    data = re.search(r"url\(data:font/woff;base64,([A-Za-z0-9+/=]+)\)", style).group(1)
    font = TTFont(io.BytesIO(base64.b64decode(data)))
    covered = set(font.getBestCmap())
    hangul = {ord(c) for c in html if "\uac00" <= c <= "\ud7a3"}
    assert hangul and hangul <= covered
    assert len(data) < 200_000  # a subset, not the 4.7 MB font


# --------------------------------------------------------------------------- in Chromium

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (installed by .ci/run)")
def test_report_in_headless_chromium_finds_its_clips_and_font(scored):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page()
            page.goto(scored.report.resolve().as_uri())
            page.wait_for_function(
                "[...document.querySelectorAll('audio')].every(a => a.readyState >= 1)",
                timeout=30_000,
            )
            players = page.evaluate(
                "[...document.querySelectorAll('audio')].map("
                "a => [a.closest('tr').cells[0].innerText, a.duration, a.currentTime])"
            )
            fonts = page.evaluate("[...document.fonts].map(f => [f.family, f.status])")
            cards = page.locator(".cards .card").count()
        finally:
            browser.close()
    assert players and all(duration > 0 for _, duration, _ in players)  # the links resolve
    segment = [start for ident, _, start in players if ident.startswith(SEGMENT)]
    assert segment == [pytest.approx(0.5)]  # the media fragment starts the segment
    assert fonts == [["voxadapt NanumGothic", "loaded"]]
    assert cards == 5


# Where each worst-utterance cell lies, the viewport's width, and the page's own width.
WORST_CELLS_JS = """() => ({
  viewport: window.innerWidth,
  page: document.documentElement.scrollWidth,
  cells: [...document.querySelectorAll('table.worst td')].map(td => {
    const box = td.getBoundingClientRect();
    return {cls: td.className, text: td.innerText.trim(), left: box.left, right: box.right,
            shown: box.width > 0 && box.height > 0};
  }),
  speakerHeaders: [...document.querySelectorAll('table.worst th')]
    .filter(th => th.innerText.trim() === 'speaker').length,
})"""


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (installed by .ci/run)")
def test_worst_utterances_fit_a_phone_screen(tmp_path):
    """At 420 px (a phone) every alignment lies within the viewport, the page does not
    scroll sideways, and no speaker column is empty (shown when known, else omitted)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    looped = [  # a repetition loop: 300 characters without a space must wrap too
        {"id": "loop", "speaker": "s1", "duration": 3.0, **score_row("네 알겠습니다", "네" * 300)}
    ]
    reports = {
        "speakers": score_run(tmp_path / "with", speakers=5).report,
        "none": score_run(tmp_path / "without", speakers=None).report,
        "loop": write_report(tmp_path / "loop.html", compute_metrics(looped, bootstrap=0), looped),
    }
    seen = {}
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 420, "height": 900})
            for name, report in reports.items():
                page.goto(report.resolve().as_uri())
                seen[name] = page.evaluate(WORST_CELLS_JS)
        finally:
            browser.close()
    for name, found in seen.items():
        assert found["viewport"] == 420
        assert found["page"] <= 420, f"{name}: the page scrolls sideways"
        alignments = [c for c in found["cells"] if c["cls"] == "align"]
        assert alignments and all(c["shown"] for c in alignments)
        for cell in alignments:
            assert cell["left"] >= 0 and cell["right"] <= 420, (name, cell)
    speakers = [c for c in seen["speakers"]["cells"] if c["cls"] == "speaker"]
    assert speakers and all(c["text"].startswith("spk") for c in speakers)
    assert [c["text"] for c in seen["loop"]["cells"] if c["cls"] == "speaker"] == ["s1"]
    assert not [c for c in seen["none"]["cells"] if c["cls"] == "speaker"]
    assert seen["none"]["speakerHeaders"] == 0


def test_empty_duration_plot_draws_every_glyph(tmp_path):
    """An all-rejected run plots an empty histogram whose axis has negative ticks: NanumGothic
    has no U+2212 MINUS SIGN, so axes use the ASCII minus (no glyph warning leaks)."""
    from voxadapt.plots import plot_durations

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot_durations([], [], tmp_path / "d.png", min_duration_s=3, max_duration_s=25)
    assert not [w for w in caught if "Glyph" in str(w.message)]
    assert (tmp_path / "d.png").stat().st_size > 0
