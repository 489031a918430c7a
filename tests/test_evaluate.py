"""voxadapt evaluate on the tiny model: predictions, metrics vs jiwer, resume, report."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jiwer
import pytest

from voxadapt.decoding import DecodeOptions
from voxadapt.errors import ConfigError
from voxadapt.manifest import read_manifest, write_jsonl
from voxadapt.scoring.rows import read_predictions
from voxadapt.stages.evaluate import EvaluateConfig, evaluate

FAST = {
    "quantization": "none",
    "decode": DecodeOptions(max_new_tokens=6, num_workers=0),
    "bootstrap": 100,
}


def nospace(texts):
    return ["".join(t.split()) for t in texts]


@pytest.fixture(scope="module")
def eval_manifest(tmp_path_factory, sample_manifest):
    """12 utterances over 6 speakers (enough for intervals) with roles, from the sample
    clips."""
    utterances = read_manifest(sample_manifest)
    rows = []
    for index in range(12):
        record = utterances[index % len(utterances)].to_dict()
        record.update(
            id=f"utt{index:02d}",
            speaker=f"spk{index % 6}",
            role=["의사", "간호사", "환자"][index % 3],
        )
        rows.append(record)
    path = tmp_path_factory.mktemp("eval") / "test.jsonl"
    write_jsonl(path, rows)
    return path


def test_evaluate_writes_predictions_metrics_and_report(
    tiny_model, adapters, eval_manifest, tmp_path
):
    terms = tmp_path / "terms.txt"
    terms.write_text("혈압\n체온\n해열제\n", encoding="utf-8")
    result = evaluate(
        EvaluateConfig(
            manifest=eval_manifest,
            model=str(tiny_model),
            adapter=adapters["lora"],
            out_dir=tmp_path / "eval",
            terms=terms,
            **{**FAST, "decode": DecodeOptions(batch_size=4, max_new_tokens=6, num_workers=0)},
        )
    )
    rows = read_predictions(result.predictions)
    assert len(rows) == 12 and result.decoded == 12
    assert {"reference", "hypothesis", "reference_normalized", "scores", "role"} <= set(rows[0])
    refs = [r["reference_normalized"] for r in rows]
    hyps = [r["hypothesis_normalized"] for r in rows]
    metrics = json.loads(result.metrics_path.read_text())
    assert metrics["cer"] == pytest.approx(jiwer.cer(nospace(refs), nospace(hyps)))
    assert metrics["wer"] == pytest.approx(jiwer.wer(refs, hyps))
    low, high = metrics["cer_ci95"]
    assert low <= metrics["cer"] <= high
    assert set(metrics["breakdowns"]["role"]) == {"의사", "간호사", "환자"}
    assert "duration" in metrics["breakdowns"]
    assert metrics["term_recall"]["occurrences"] > 0
    assert metrics["model"] == str(tiny_model)
    html = result.report.read_text()
    assert "<svg" in html and "Worst" in html
    assert not re.search(
        r"""(src|href)\s*=\s*["']?(https?:|//)|<link|@import|url\((?!#|data:)""", html
    )

    # a second run refuses to clobber, --compare pairs the two runs
    config = EvaluateConfig(
        manifest=eval_manifest, model=str(tiny_model), out_dir=tmp_path / "eval", **FAST
    )
    with pytest.raises(ConfigError, match="--resume"):
        evaluate(config)
    base = evaluate(
        EvaluateConfig(
            manifest=eval_manifest,
            model=str(tiny_model),
            out_dir=tmp_path / "base",
            compare=result.predictions,
            **FAST,
        )
    )
    compare = base.metrics["compare"]
    assert compare["utterances"] == 12
    assert compare["delta"] == pytest.approx(base.metrics["cer"] - metrics["cer"])


def test_resume_refuses_a_different_model(tiny_model, adapters, eval_manifest, tmp_path):
    common = {"manifest": eval_manifest, "model": str(tiny_model), "out_dir": tmp_path, **FAST}
    evaluate(EvaluateConfig(limit=2, **common))
    with pytest.raises(ConfigError, match="adapter"):
        evaluate(EvaluateConfig(limit=2, adapter=adapters["full"], resume=True, **common))


def test_killed_run_resumes_without_duplicates(tiny_model, eval_manifest, tmp_path):
    args = [
        sys.executable, "-m", "voxadapt.cli", "evaluate", str(eval_manifest),
        "--model", str(tiny_model), "--quantization", "none", "--batch-size", "1",
        "--max-new-tokens", "40", "--workers", "0", "--bootstrap", "0",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    reference = subprocess.run(
        [*args, "--out", str(tmp_path / "whole")], env=env, capture_output=True, text=True
    )
    assert reference.returncode == 0, reference.stderr[-2000:]

    out = tmp_path / "killed"
    predictions = out / "predictions.jsonl"
    process = subprocess.Popen([*args, "--out", str(out)], env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        if predictions.exists() and predictions.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = predictions.read_bytes().count(b"\n")
    assert 3 <= partial < 12, "the run finished before it could be killed"
    with predictions.open("ab") as handle:  # as if killed in the middle of a line
        handle.write(b'{"id": "utt11", "hypo')

    resumed = subprocess.run(
        [*args, "--out", str(out), "--resume"], env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"({12 - partial} decoded now)" in resumed.stdout
    lines = predictions.read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert len(ids) == len(set(ids)) == 12
    whole = {
        r["id"]: r["hypothesis"] for r in read_predictions(tmp_path / "whole" / "predictions.jsonl")
    }
    assert {r["id"]: r["hypothesis"] for r in read_predictions(predictions)} == whole
    assert json.loads((out / "metrics.json").read_text())["cer"] == pytest.approx(
        json.loads((tmp_path / "whole" / "metrics.json").read_text())["cer"]
    )


def test_ctrl_c_says_how_to_resume_and_the_hint_works(tiny_model, eval_manifest, tmp_path):
    """SIGINT mid-decode: exit 130 with one line naming the kept rows and --resume; the
    command it names then decodes only the rest."""
    out = tmp_path / "stopped"
    args = [
        sys.executable, "-m", "voxadapt.cli", "evaluate", str(eval_manifest),
        "--model", str(tiny_model), "--quantization", "none", "--batch-size", "1",
        "--max-new-tokens", "40", "--workers", "0", "--bootstrap", "0", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    predictions = out / "predictions.jsonl"
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:  # a file, not a pipe: progress output cannot block the run
        process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.time() + 300
            while time.time() < deadline and process.poll() is None:
                if predictions.exists() and predictions.read_bytes().count(b"\n") >= 2:
                    break
                time.sleep(0.05)
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    err = log.read_text()
    kept = predictions.read_bytes().count(b"\n")
    assert 2 <= kept < 12, "the run finished before it could be interrupted"
    assert code == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last == (
        f"voxadapt: interrupted: {kept} decoded utterances are kept in {predictions}; to "
        "decode only the rest, run the same command with --resume"
    )
    assert "Traceback" not in err
    resumed = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"({12 - kept} decoded now)" in resumed.stdout


@pytest.mark.parametrize(
    ("flags", "earlier", "decoded", "hint"),
    [
        ({}, 0, 0, "interrupted before any utterance was decoded: run the same command again"),
        ({}, 0, 3, "3 decoded utterances are kept in {p}; to decode only the rest, run the "
         "same command with --resume"),
        ({"resume": True}, 2, 3, "5 decoded utterances are kept in {p}; to decode only the "
         "rest, run the same command again (it has --resume)"),
        ({"overwrite": True}, 4, 0, "interrupted before decoding; {d} is as it was: run the "
         "same command again (with --overwrite) to start over"),
        ({"overwrite": True}, 4, 2, "2 decoded utterances are kept in {p}; to decode only the "
         "rest, run the same command with --resume instead of --overwrite"),
    ],
)  # fmt: skip
def test_interrupt_hint_fits_how_the_run_was_started(
    tiny_model, eval_manifest, tmp_path, monkeypatch, flags, earlier, decoded, hint
):
    """The hint for each way a run can be stopped: the engine is stood in for by one that
    leaves `decoded` rows (after `earlier` ones; --overwrite first moves those aside) and
    is then interrupted."""
    from voxadapt.errors import StageInterrupted
    from voxadapt.stages import evaluate as stage

    predictions = tmp_path / "out" / "predictions.jsonl"

    def stopped_engine(rows):
        def engine(config, out_dir):
            if rows and config.overwrite:
                predictions.unlink()  # moved aside once the model loaded
            with predictions.open("a") as handle:
                handle.write('{"id": "u"}\n' * rows)
            raise KeyboardInterrupt

        return engine

    common = {"manifest": eval_manifest, "model": str(tiny_model), "out_dir": predictions.parent}
    if earlier:  # an earlier run, stopped too
        monkeypatch.setattr(stage, "run_evaluation", stopped_engine(earlier))
        with pytest.raises(StageInterrupted):
            evaluate(EvaluateConfig(**common, **FAST))
    monkeypatch.setattr(stage, "run_evaluation", stopped_engine(decoded))
    with pytest.raises(StageInterrupted) as caught:
        evaluate(EvaluateConfig(**common, **flags, **FAST))
    assert str(caught.value).endswith(hint.format(p=predictions, d=predictions.parent))


CHROMIUM = (
    shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
)


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (installed by .ci/run)")
def test_report_renders_in_headless_chromium(tiny_model, eval_manifest, tmp_path):
    result = evaluate(
        EvaluateConfig(
            manifest=eval_manifest, model=str(tiny_model), out_dir=tmp_path, limit=4, **FAST
        )
    )
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--user-data-dir=" + str(tmp_path / "p"),
    ]
    url = result.report.resolve().as_uri()
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "voxadapt evaluation" in dom.stdout and "<svg" in dom.stdout
    assert dom.stdout.count("<tr>") >= 5
    screenshot = tmp_path / "report.png"
    shot = subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={screenshot}", "--window-size=1200,2000", url],
        capture_output=True,
        timeout=120,
    )
    assert shot.returncode == 0 and screenshot.stat().st_size > 10_000
    from PIL import Image

    pixels = Image.open(screenshot).convert("L").getextrema()
    assert pixels[0] < 100 < pixels[1]  # dark text on a light page, not a blank image
