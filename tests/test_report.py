"""Evaluation report rendering: summaries, breakdown order, top errors, undefined rates."""

import matplotlib
import pytest

from voxadapt.report import format_metrics_summary, plot_cer_by_duration, write_report
from voxadapt.scoring.metrics import compute_metrics
from voxadapt.scoring.rates import score_row


def scored_rows(pairs, durations):
    return [
        {"id": f"u{i}", "speaker": f"s{i % 3}", "duration": seconds, **score_row(ref, hyp)}
        for i, ((ref, hyp), seconds) in enumerate(zip(pairs, durations, strict=True))
    ]


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
    assert "Δ -10.00 points, 95% CI [-15.00%, -5.00%], p=0.010" in summary


def test_cer_by_duration_plot_is_in_numeric_order():
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # labels as text, not paths
        svg = plot_cer_by_duration(BY_DURATION)
    assert svg.index("0-5 s") < svg.index("5-10 s") < svg.index("10-15 s")
    assert "n=1, n/a" in svg


def test_report_orders_durations_and_shows_na(tmp_path):
    metrics = {"utterances": 6, "breakdowns": {"duration": BY_DURATION}}
    html = write_report(tmp_path / "report.html", metrics, []).read_text(encoding="utf-8")
    table = html[html.index("<h2>By duration</h2>") :]
    assert table.index("<td>0-5 s</td>") < table.index("<td>5-10 s</td>")
    assert table.index("<td>5-10 s</td>") < table.index("<td>10-15 s</td>")
    assert "<td>n/a</td>" in table


def test_report_from_computed_metrics(tmp_path):
    pairs = [
        ("가슴 통증이 심해요", "가슴 통종이 심해요"),
        ("통증이 있어요", "통종이 있어요 네"),
        ("", "네 네"),  # an empty reference: no rate, still listed
        ("혈압약 드세요", "혈압 드세요"),
        ("내일 오세요", "내일 오세요"),
    ]
    rows = scored_rows(pairs, [12.0, 3.0, 1.0, 7.0, 31.0])
    metrics = compute_metrics(rows, terms=[("고혈압",), ("통증",)], bootstrap=50)
    assert list(metrics["breakdowns"]["duration"]) == ["0-5 s", "5-10 s", "10-15 s", "30+ s"]
    html = write_report(tmp_path / "report.html", metrics, rows).read_text(encoding="utf-8")
    assert "<h2>Most frequent errors</h2>" in html
    assert "<td>증 → 종</td><td>2</td>" in html  # characters
    assert "<td>통증이 → 통종이</td><td>2</td>" in html  # eojeol
    assert "<td>u2</td><td>n/a</td>" in html  # the empty reference in the worst list
    assert "Most-missed medical terms" in html


def test_report_without_errors_has_no_error_table(tmp_path):
    rows = scored_rows([("내일 오세요", "내일 오세요")], [2.0])
    metrics = compute_metrics(rows, bootstrap=0)
    html = write_report(tmp_path / "report.html", metrics, rows).read_text(encoding="utf-8")
    assert "Most frequent errors" not in html
    assert metrics["cer"] == pytest.approx(0.0)
