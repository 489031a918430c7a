"""The benchmarks keep running: `python -m bench --quick` end to end on small inputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu import TRAIN_MODULES

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_quick_benchmarks_run_and_report_ratios(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--results-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    names = {"cache", "decoding", "scoring", "dataloading", "prepare", "padding", "longform"}
    names |= {"serve", "gpu", "train_modules", "align", "redact"}
    assert {p.stem for p in tmp_path.glob("*.json")} == names
    cache = json.loads((tmp_path / "cache.json").read_text())
    assert cache["max_abs_feature_diff"] <= 1e-3 and cache["bytes_ratio"] < 1
    assert json.loads((tmp_path / "scoring.json").read_text())["identical_counts"] is True
    decoding = json.loads((tmp_path / "decoding.json").read_text())
    assert decoding["utterances_per_s"]["voxadapt"]["median"] > 0
    gpu = json.loads((tmp_path / "gpu.json").read_text())  # the --tiny CPU path of bench/gpu.py
    assert gpu["training"] and all(row["samples_per_s"] for row in gpu["training"])
    assert {row["loss"] for row in gpu["training"]} == {"full_logits", "label_logits"}
    assert len(gpu["inference"]) == 3
    assert [row["train_modules"] for row in gpu["train_modules"]] == list(TRAIN_MODULES)
    choices = json.loads((tmp_path / "train_modules.json").read_text())["choices"]
    assert choices["projector"]["ratio_vs_projector"] == 1.0 and len(choices) == 4
    padding = json.loads((tmp_path / "padding.json").read_text())["padding_per_real_token"]
    assert 0 <= padding["length_grouped"] < padding["random"]
    longform = json.loads((tmp_path / "longform.json").read_text())
    assert longform["rtfx"]["long_form"] > 0 and longform["peak_rss_mb"]["no_vad"] > 0
    serve = json.loads((tmp_path / "serve.json").read_text())
    assert serve["errors"] == 0 and serve["concurrent"]["requests_per_s"] > 0
    align = json.loads((tmp_path / "align.json").read_text())
    assert align["aligner_vs_decoding"] > 0 and align["words_timed"] > 0
    redact = json.loads((tmp_path / "redact.json").read_text())
    assert redact["structured_min_recall"] >= 0.95 and redact["medical_numbers_kept"] >= 0.95
    assert "x utterances/s" in result.stdout
