"""report.html: the self-contained evaluation page of `evaluate`/`score` (headline cards, inputs,
speakers, breakdowns, errors, the worst utterances with players and alignments) and the page
of `compare`."""

from __future__ import annotations

import logging
import math
import os
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from voxadapt import units
from voxadapt.fonts import CSS_FONTS, CSS_MONOSPACE, embedded_font_css
from voxadapt.manifest import atomic_write
from voxadapt.plots import plot_cer_by_duration, plot_cer_by_group
from voxadapt.report import compare_table_rows, format_metrics_summary, no_interval_reason
from voxadapt.scoring.intervals import MIN_INTERVAL_SPEAKERS

log = logging.getLogger(__name__)

_pct = units.percent  # a rate for people; 'n/a' when undefined (no reference characters)

# Korean lines break between eojeol (word-break: keep-all), as Korean typesetting does.
_STYLE = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d0d7de;--good:#1a7f37;--bad:#cf222e}
body{font-family:FONTS;margin:1.5em auto;max-width:1100px;padding:0 1.5em;color:var(--fg);
line-height:1.45}
h1{font-size:1.6em;margin:0 0 .2em}h2{margin-top:1.8em;border-bottom:1px solid var(--line);
padding-bottom:.2em;font-size:1.3em}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(230px,1fr));gap:12px;
margin:1em 0}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.card .label{color:var(--muted);font-size:.9em}
.card .value{font-size:2em;font-weight:600;font-variant-numeric:tabular-nums}
.card .detail{color:var(--muted);font-size:.85em}
.card.better{border-color:var(--good)}.card.better .value{color:var(--good)}
.card.worse{border-color:var(--bad)}.card.worse .value{color:var(--bad)}
@media (min-width:720px){.card.wide{grid-column:span 2}}
.note{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:8px 12px}
dl.inputs{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:.4em 0}
dl.inputs dt{color:var(--muted)}dl.inputs dd{margin:0;overflow-wrap:anywhere}
table{border-collapse:collapse;margin:.6em 0 1.4em;display:block;max-width:100%;overflow-x:auto}
pre{overflow-x:auto}
td,th{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
p,td{word-break:keep-all;overflow-wrap:break-word}
th{background:#f6f8fa}.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code,pre{font-family:MONOSPACE}.align{white-space:pre-wrap;min-width:18em}
.sub{background:#ffd27f}.del{background:#ff9c9c;text-decoration:line-through}
.ins{background:#9be39b}.muted{color:var(--muted)}
svg{max-width:100%;height:auto}audio{width:230px;height:34px}
@media (max-width:640px){
table.worst,table.worst tbody,table.worst tr,table.worst td{display:block}
table.worst tr.head{display:none}
table.worst tr{border:1px solid var(--line);border-radius:6px;margin:0 0 10px;padding:4px 0}
table.worst td{border:0;padding:2px 10px}table.worst td.num{text-align:left}
table.worst td[data-label]::before{content:attr(data-label) ": ";color:var(--muted)}
table.worst .align{min-width:0}table.worst td:empty{display:none}audio{max-width:100%}}
""".replace("MONOSPACE", CSS_MONOSPACE).replace("FONTS", CSS_FONTS)


def _table(
    header: list[str], rows: list[list[str]], numeric: tuple[int, ...] = (), name: str = ""
) -> str:
    """An HTML table of plain text cells; columns in `numeric` right-aligned; `name` its
    class."""

    def cell(tag: str, index: int, text: str) -> str:
        style = ' class="num"' if index in numeric else ""
        return f"<{tag}{style}>{escape(str(text))}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    table = f"<table class='{name}'>" if name else "<table>"
    return f"{table}<tr>{head}</tr>{body}</table>"


def _card(metric: str, label: str, value: str, details: list[str], tone: str = "") -> str:
    lines = "".join(f"<div class='detail'>{escape(d)}</div>" for d in details)
    return (
        f"<div class='{f'card {tone}'.strip()}' data-metric='{metric}'>"
        f"<div class='label'>{escape(label)}</div><div class='value'>{escape(value)}</div>"
        f"{lines}</div>"
    )


def _interval(
    metrics: dict[str, Any], interval: list[float] | None, own: dict[str, Any] | None = None
) -> str:
    """A card's interval line: the 95% CI, or "95% CI n/a (fewer than 5 speakers: 2)"."""
    if interval:
        return f"95% CI {units.percent_interval(interval)}"
    return f"95% CI n/a ({no_interval_reason(metrics, own)})"


def _cards(metrics: dict[str, Any]) -> str:
    """The headline: one card per rate with its 95% CI, and the comparison in points."""
    cards = [
        _card(
            "cer",
            "CER, character error rate",
            _pct(metrics.get("cer")),
            [
                _interval(metrics, metrics.get("cer_ci95")),
                "wrong characters per reference character",
            ],
        )
    ]
    if metrics.get("multi_reference_utterances"):
        cards.append(
            _card(
                "cer_multi_reference",
                "CER, multi-reference",
                _pct(metrics.get("cer_multi_reference")),
                [
                    _interval(metrics, metrics.get("cer_multi_reference_ci95")),
                    "either written form of numbers and units counts as right",
                ],
            )
        )
    cards.append(
        _card(
            "wer",
            "WER, word (eojeol) error rate",
            _pct(metrics.get("wer")),
            [_interval(metrics, metrics.get("wer_ci95")), "wrong space-separated words per word"],
        )
    )
    recall = metrics.get("term_recall")
    if recall:
        cards.append(
            _card(
                "term_recall",
                "Medical term recall",
                _pct(recall.get("recall")),
                [
                    _interval(metrics, recall.get("ci95"), recall),
                    f"{recall.get('hits', 0)} of {recall.get('occurrences', 0)} term "
                    f"occurrences transcribed ({recall.get('terms', 0)} terms listed)",
                ],
            )
        )
    if metrics.get("compare"):
        cards.append(_compare_card(metrics))
    return "<div class='cards'>" + "".join(cards) + "</div>"


def _compare_card(metrics: dict[str, Any]) -> str:
    """CER difference to the --compare system in points: green when the CI lies below 0."""
    compare = metrics["compare"]
    ci, delta = compare.get("ci"), compare.get("delta")
    if not ci:
        few = compare.get("too_few_speakers")
        why = f"fewer than {MIN_INTERVAL_SPEAKERS} speakers: {few}" if few else "--bootstrap 0"
        tone, verdict = "", f"no CI ({why})"
    elif ci[1] < 0:
        tone, verdict = "better", "lower CER than the other system (the CI excludes 0)"
    elif ci[0] > 0:
        tone, verdict = "worse", "higher CER than the other system (the CI excludes 0)"
    else:
        tone, verdict = "", "no clear difference (the CI includes 0)"
    other = Path(metrics.get("compare_hypotheses") or "the other system")
    # every evaluate run writes a predictions.jsonl: name its run folder too
    name = Path(other.parent.name, other.name) if other.name == "predictions.jsonl" else other.name
    return _card(
        "compare",
        f"CER vs {name}",
        units.points(delta),
        [
            *(
                [f"95% CI {units.points_interval(ci)}, {units.p_value(compare.get('p_value'))}"]
                if ci
                else []
            ),
            f"{_pct(compare.get('this'))} here vs {_pct(compare.get('other'))} there, "
            f"on {compare.get('utterances', 0)} shared utterances",
            verdict,
        ],
        f"wide {tone}",
    )


def _inputs_html(metrics: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """What was scored: the model (evaluate) or the hypotheses file (score), the manifest,
    the other system, and the rows that could not be scored as given."""
    entries: list[tuple[str, str]] = []
    if metrics.get("hypotheses"):
        entries.append(("hypotheses", metrics["hypotheses"]))
    if metrics.get("model"):
        entries.append(("model", str(metrics["model"])))
        entries.append(("adapter", str(metrics.get("adapter") or "none (base model)")))
    if metrics.get("manifest"):
        entries.append(("references", metrics["manifest"]))
    if metrics.get("compare_hypotheses"):
        entries.append(("compared with", metrics["compare_hypotheses"]))
    entries.append(
        (
            "scored",
            f"{metrics.get('utterances', 0)} utterances, "
            f"{metrics.get('reference_characters', 0)} reference characters; scoring "
            f"normalization {metrics.get('scoring_normalization')}",
        )
    )
    parts = ["<dl class='inputs'>"]
    parts += [f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in entries]
    parts.append("</dl>")
    missing = [str(r["id"]) for r in rows if r.get("missing_hypothesis")]
    count = metrics.get("missing_hypotheses", len(missing))
    if count:
        parts.append(
            f"<p class='note' data-check='missing'><b>{count} of {metrics.get('utterances', 0)} "
            f"utterances {_verb(count, 'has', 'have')} no hypothesis</b> and "
            f"{_verb(count, 'is', 'are')} scored as empty output (every reference character "
            f"deleted){_examples(missing)}.</p>"
        )
    unknown = metrics.get("unknown_hypotheses") or 0
    if unknown:
        parts.append(
            f"<p class='note' data-check='unknown'><b>{unknown} "
            f"{_verb(unknown, 'hypothesis has an id', 'hypotheses have ids')} the manifest "
            f"does not know</b> and {_verb(unknown, 'is', 'are')} not scored"
            f"{_examples(metrics.get('unknown_hypothesis_ids') or [])}.</p>"
        )
    if metrics.get("failed"):
        parts.append(
            f"<p class='note' data-check='failed'><b>{metrics['failed']} "
            f"{_verb(metrics['failed'], 'utterance', 'utterances')} could not be read</b> "
            "(not scored; see failed.jsonl).</p>"
        )
    return parts


def _verb(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


def _examples(ids: list[str], shown: int = 5) -> str:
    if not ids:
        return ""
    listed = ", ".join(f"<code>{escape(i)}</code>" for i in ids[:shown])
    return f" (e.g. {listed}{', …' if len(ids) > shown else ''})"


def _alignment_html(reference: str, hypothesis: str) -> tuple[str, str]:
    from voxadapt.scoring.edits import alignment

    ref_html, hyp_html = [], []
    for op, ref_part, hyp_part in alignment(reference, hypothesis):
        if op == "equal":
            ref_html.append(escape(ref_part))
            hyp_html.append(escape(hyp_part))
        elif op == "substitute":
            ref_html.append(f'<span class="sub">{escape(ref_part)}</span>')
            hyp_html.append(f'<span class="sub">{escape(hyp_part)}</span>')
        elif op == "delete":
            ref_html.append(f'<span class="del">{escape(ref_part)}</span>')
        else:
            hyp_html.append(f'<span class="ins">{escape(hyp_part)}</span>')
    return "".join(ref_html), "".join(hyp_html)


def _top_errors_html(top_errors: dict[str, dict[str, list]]) -> list[str]:
    """One table per level (characters, eojeol): substitutions, deletions and insertions
    side by side, most frequent first."""
    from itertools import zip_longest

    parts = []
    for level, title in (("characters", "Characters"), ("eojeol", "Eojeol (words)")):
        errors = top_errors.get(level) or {}
        columns = [
            [
                (f"{e['reference']} → {e['hypothesis']}", e["count"])
                for e in errors.get("substitutions", [])
            ],
            [(e["reference"], e["count"]) for e in errors.get("deletions", [])],
            [(e["hypothesis"], e["count"]) for e in errors.get("insertions", [])],
        ]
        cells = [
            [str(value) for entry in line for value in entry]
            for line in zip_longest(*columns, fillvalue=("", ""))
        ]
        if cells:
            parts.append(f"<h3>{title}</h3>")
            parts.append(
                _table(
                    ["substitution (ref → hyp)", "n", "deletion", "n", "insertion", "n"],
                    cells,
                    numeric=(1, 3, 5),
                )
            )
    return ["<h2>Most frequent errors</h2>", *parts] if parts else []


def _multi_reference_html(metrics: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """What the multi-reference numbers mean, and the rows whose reference changed."""
    count = metrics.get("multi_reference_utterances") or 0
    if not count:
        return []
    changed = [
        row
        for row in rows
        if (row.get("multi_reference") or {}).get("reference_normalized")
        not in (None, row.get("reference_normalized"))
    ][:25]
    parts = [
        "<h2>Multi-reference scoring</h2>",
        f"<p>{count} {_verb(count, 'reference carries', 'references carry')} dual "
        "transcriptions such as <code>(70%)/(칠십 퍼센트)"
        "</code>. <b>CER</b> scores against the training text (one form per span, "
        "comparable with published results); <b>CER, multi-reference</b> scores each "
        f"utterance against the closest form the label allows, chosen per span: "
        f"{_pct(metrics.get('cer'))} vs {_pct(metrics.get('cer_multi_reference'))}. The "
        "difference is what the model is charged for saying a number or unit the other "
        "correct way.</p>",
    ]
    if changed:
        parts.append(
            _table(
                ["id", "training-text reference", "closest reference", "hypothesis"],
                [
                    [
                        str(r["id"]),
                        r["reference_normalized"],
                        r["multi_reference"]["reference_normalized"],
                        r["hypothesis_normalized"],
                    ]
                    for r in changed
                ],
            )
        )
    return parts


def speaker_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per speaker: utterances, reference characters, CER and WER; worst CER first (undefined
    rates last). Utterances without a speaker are left out."""
    from voxadapt.scoring.rates import corpus_metrics

    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("speaker") not in (None, ""):
            groups.setdefault(str(row["speaker"]), []).append(row)
    table = []
    for speaker, members in groups.items():
        metrics = corpus_metrics(members)
        table.append({"speaker": speaker, **metrics})
    return sorted(
        table,
        key=lambda s: (s["cer"] is None, -(s["cer"] or 0.0), -s["utterances"], s["speaker"]),
    )


def _speakers_html(rows: list[dict[str, Any]], limit: int) -> list[str]:
    speakers = speaker_table(rows)
    if not speakers:
        return []
    shown = speakers[:limit]
    parts = [
        "<h2>By speaker</h2>",
        f"<p class='muted'>{len(speakers)} speakers, highest CER first.</p>",
        _table(
            ["speaker", "utterances", "reference characters", "CER", "WER"],
            [
                [
                    s["speaker"],
                    str(s["utterances"]),
                    str(s.get("reference_characters", 0)),
                    _pct(s["cer"]),
                    _pct(s.get("wer")),
                ]
                for s in shown
            ],
            numeric=(1, 2, 3, 4),
            name="speakers",
        ),
    ]
    if len(speakers) > limit:
        parts.append(
            f"<p class='muted' data-check='more-speakers'>… and {len(speakers) - limit} more "
            "speakers (all of them: predictions.jsonl, grouped by speaker).</p>"
        )
    return parts


def _breakdowns_html(breakdown: dict[str, dict[str, Any]]) -> list[str]:
    """A plot and a table per metadata field (role, gender, age...) and per duration bucket."""
    from voxadapt.scoring.breakdowns import group_order

    parts = []
    for field, groups in sorted(breakdown.items(), key=lambda item: item[0] == "duration"):
        ordered = {value: groups[value] for value in sorted(groups, key=group_order)}
        if field == "duration":
            parts += ["<h2>By duration</h2>", plot_cer_by_duration(ordered)]
        else:
            parts.append(f"<h2>By {escape(field)}</h2>")
            parts.append(plot_cer_by_group(ordered, title=f"CER by {field}", xlabel=field))
        parts.append(
            _table(
                [field, "utterances", "CER", "WER", "sWER", "SER", "insertions"],
                [
                    [
                        value,
                        str(m.get("utterances", 0)),
                        _pct(m.get("cer")),
                        _pct(m.get("wer")),
                        _pct(m.get("swer")),
                        _pct(m.get("ser")),
                        _pct(m.get("insertion_rate")),
                    ]
                    for value, m in ordered.items()
                ],
                numeric=(1, 2, 3, 4, 5, 6),
            )
        )
    return parts


def _terms_html(metrics: dict[str, Any]) -> list[str]:
    recall = metrics.get("term_recall")
    if not recall or not recall.get("most_missed"):
        return []
    return [
        "<h2>Most-missed medical terms</h2>",
        _table(
            ["term", "missed", "occurrences"],
            [[m["term"], str(m["missed"]), str(m["occurrences"])] for m in recall["most_missed"]],
            numeric=(1, 2),
        ),
    ]


def audio_link(row: dict[str, Any], folder: Path) -> str | None:
    """The `src` of a row's clip for a page in `folder`: a relative URL (the report and the
    audio move together), with a media fragment `#t=start,end` (seconds) for a segment of a
    longer recording. None when the row names no audio."""
    audio = row.get("audio")
    if not isinstance(audio, str) or not audio:
        return None
    try:
        src = quote(Path(os.path.relpath(audio, folder)).as_posix())
    except ValueError:  # another drive (Windows): no relative path exists
        src = Path(os.path.abspath(audio)).as_uri()
    offset, duration = row.get("offset"), row.get("duration")
    if isinstance(offset, (int, float)) and isinstance(duration, (int, float)):
        src += f"#t={offset:.3f},{offset + duration:.3f}"
    return src


def worst_rows(rows: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The `count` rows with the highest CER, those without any error left out; an empty
    reference with insertions (no rate) ranks first, ties by more errors."""
    from voxadapt.scoring.edits import EditCounts

    ranked = []
    for row in rows:
        counts = EditCounts(**row["scores"]["cer"])
        if counts.errors:
            rate = math.inf if counts.rate is None else counts.rate
            ranked.append((-rate, -counts.errors, str(row["id"]), row))
    ranked.sort(key=lambda item: item[:3])
    return [item[3] for item in ranked[:count]]


def _worst_html(rows: list[dict[str, Any]], folder: Path, count: int) -> list[str]:
    """The worst utterances: id, speaker (a column only when some row has one), CER, a
    player and the colored alignment. On a narrow screen (a phone) each row becomes a block
    of its cells, so that the alignment wraps within the page instead of off its edge."""
    shown = worst_rows(rows, count)
    if not shown:
        return ["<h2>Worst utterances</h2><p>Every utterance was transcribed without error.</p>"]
    with_speakers = any(row.get("speaker") not in (None, "") for row in shown)
    header = ["<th>id</th>", "<th>speaker</th>" if with_speakers else ""]
    header += ["<th class='num'>CER</th>", "<th>listen</th>", "<th>reference / hypothesis</th>"]
    parts = [
        f"<h2>Worst {len(shown)} utterances</h2><p class='muted'>Highest CER first; "
        "utterances without errors are not listed. "
        "<span class='sub'>substituted</span> <span class='del'>deleted</span> "
        "<span class='ins'>inserted</span> (normalized text)</p>",
        f"<table class='worst'><tr class='head'>{''.join(header)}</tr>",
    ]
    parts += [_worst_row(row, folder, with_speakers) for row in shown]
    parts.append("</table>")
    return parts


def _worst_row(row: dict[str, Any], folder: Path, with_speakers: bool) -> str:
    """One row of the worst-utterances table; `data-label` names a cell when the rows are
    stacked on a narrow screen."""
    from voxadapt.scoring.edits import EditCounts

    ref_html, hyp_html = _alignment_html(row["reference_normalized"], row["hypothesis_normalized"])
    flags = [
        flag
        for key, flag in (
            ("missing_hypothesis", "no hypothesis"),
            ("repetition_loop", "loop"),
            ("truncated", "truncated"),
        )
        if row.get(key)
    ]
    flag_html = f"<div class='muted'>{escape(', '.join(flags))}</div>" if flags else ""
    src = audio_link(row, folder)
    player = f"<audio controls preload='metadata' src='{escape(src)}'></audio>" if src else ""
    speaker = str(row.get("speaker") or "")
    cells = [
        f"<td>{escape(str(row['id']))}{flag_html}</td>",
        f"<td class='speaker' data-label='speaker'>{escape(speaker) or '—'}</td>"
        if with_speakers
        else "",
        f"<td class='num' data-label='CER'>{_pct(EditCounts(**row['scores']['cer']).rate)}</td>",
        f"<td class='listen'>{player}</td>" if player else "<td class='listen'></td>",
        f"<td class='align'>REF: {ref_html}<br>HYP: {hyp_html}</td>",
    ]
    return f"<tr>{''.join(cells)}</tr>"


def write_report(
    path: Path,
    metrics: dict[str, Any],
    rows: list[dict[str, Any]],
    *,
    worst: int = 25,
    speakers: int = 50,
) -> Path:
    """One self-contained HTML page: headline cards, what was scored, per-speaker table,
    breakdowns with plots, most frequent errors, term recall, the worst utterances with
    players and colored alignments, and the full metrics table. No network assets.

    worst: utterances listed; speakers: rows of the speaker table.
    """
    title = (
        f"Scores of {Path(metrics['hypotheses']).name}"
        if metrics.get("hypotheses")
        else "voxadapt evaluation"
    )
    body = [
        f"<h1>{escape(title)}</h1>",
        *_inputs_html(metrics, rows),
        _cards(metrics),
        *_multi_reference_html(metrics, rows),
        *_speakers_html(rows, speakers),
        *_breakdowns_html(metrics.get("breakdowns") or {}),
        *_terms_html(metrics),
        *_top_errors_html(metrics.get("top_errors") or {}),
        *_worst_html(rows, Path(path).parent, worst),
        "<h2>All metrics</h2>",
        f"<pre>{escape(format_metrics_summary(metrics))}</pre>",
    ]
    return _write_page(path, title, body)


def _write_page(path: Path, title: str, body: list[str]) -> Path:
    """A self-contained HTML page (the Korean font subset embedded, no network assets),
    written atomically."""
    text = "\n".join(body)
    page = [
        "<!DOCTYPE html><html lang='ko'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{escape(title)}</title><style>{embedded_font_css(text)}{_STYLE}</style>",
        "</head><body>",
        text,
        "</body></html>",
    ]
    with atomic_write(path) as handle:
        handle.write("\n".join(page))
    return path


def write_compare_report(path: Path, summary: dict[str, Any]) -> Path:
    """report.html of `voxadapt compare`: the verdicts, the table, and each system's own
    report one click away. Self-contained, no network assets."""
    header, rows = compare_table_rows(summary)
    numeric = tuple(range(1, len(header)))
    systems = "".join(
        f"<li><a href='systems/{quote(row['name'])}/report.html'>{escape(row['name'])}</a>: "
        f"{escape(row['model'])}"
        + (f" + adapter {escape(row['adapter'])}" if row.get("adapter") else "")
        + f" ({escape(row['family'])})</li>"
        for row in summary["systems"]
    )
    body = [
        "<h1>Which system transcribes this data best?</h1>",
        f"<p>{summary['utterances']} utterances of {escape(summary['manifest'])}; scoring "
        f"policy {escape(summary['scoring_policy'])}. Best: <b>{escape(summary['best'])}</b>"
        " (lowest CER).</p>",
        "<ul class='verdicts'>"
        + "".join(f"<li>{escape(v)}</li>" for v in summary["verdicts"])
        + "</ul>",
        _table(header, rows, numeric, "compare"),
        "<p>Differences are CER(system) - CER(best) on the shared utterances, with a "
        "speaker-level paired bootstrap: positive means the best is better. RTF: decoding "
        "seconds per second of audio on the device it ran on.</p>",
        f"<h2>Systems</h2><ul>{systems}</ul>",
    ]
    return _write_page(path, "voxadapt compare", body)
