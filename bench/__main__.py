"""Run the benchmarks and print their ratios: python -m bench [--quick] [--only NAME ...]."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench import (
    align,
    cache,
    dataloading,
    decoding,
    gpu,
    longform,
    padding,
    prepare_probe,
    redact,
    scoring,
    serve,
    train_modules,
)
from bench.common import RESULTS, write_result

# name -> (full run, quick run): small inputs for CI, the full sizes for RESULTS.md
BENCHMARKS = {
    "cache": (lambda: cache.run(200, 3), lambda: cache.run(16, 2)),
    "decoding": (lambda: decoding.run(48, 40, 3), lambda: decoding.run(8, 8, 2, batch_size=8)),
    "scoring": (lambda: scoring.run(10000, 3), lambda: scoring.run(2000, 2)),
    "dataloading": (lambda: dataloading.run(64, 3), lambda: dataloading.run(16, 2)),
    "prepare": (lambda: prepare_probe.run(3000, 3), lambda: prepare_probe.run(300, 2)),
    "padding": (lambda: padding.run(4000), lambda: padding.run(400)),
    "longform": (lambda: longform.run(3.0), lambda: longform.run(0.75)),
    "serve": (lambda: serve.run(200, 8), lambda: serve.run(24, 8)),
    "gpu": (lambda: gpu.run(), lambda: gpu.run(tiny=True, quick=True)),
    "train_modules": (lambda: train_modules.run(4, 3), lambda: train_modules.run(1, 1)),
    "align": (lambda: align.run(24, 40, 3), lambda: align.run(4, 8, 1, batch_size=4)),
    "redact": (lambda: redact.run(5000, 3), lambda: redact.run(500, 1)),
}

HEADLINES = {
    "cache": [("speedup_1_process", "x clips/s, 1 process"),
              ("speedup_all_cores", "x clips/s, all cores"),
              ("bytes_ratio", "bytes/clip vs seed"),
              ("max_abs_feature_diff", "max |feature diff|")],
    "decoding": [("speedup", "x utterances/s"), ("identical_transcripts", "same text")],
    "scoring": [("speedup", "x pairs/s"), ("identical_counts", "identical counts")],
    "dataloading": [("cache_vs_on_the_fly_same_workers", "x cache vs on the fly"),
                    ("cache_headroom_vs_gpu_goal", "x cache rate vs 35 samples/s")],
    "padding": [("decoder_tokens_saved_by_grouping", "decoder tokens saved by grouping")],
    "longform": [("speedup", "x long-form vs --no-vad")],
    "serve": [("throughput_ratio", "x requests/s, 8 clients vs 1"), ("errors", "errors")],
    "align": [("aligner_vs_decoding", "aligner s / decoding s, same audio")],
    "redact": [("structured_min_recall", "lowest recall, structured identifiers"),
               ("names_recall", "name recall"), ("addresses_recall", "address recall"),
               ("medical_numbers_kept", "medical numbers kept"),
               ("utterances_per_s", "utterances/s")],
    "prepare": [("speedup_all_cores", "x all cores vs 1"),
                ("probe_vs_seed_all_cores", "x vs seed loop")],
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small inputs (CI smoke run)")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="a subset")
    parser.add_argument(
        "--results-dir", type=Path, help=f"where NAME.json goes (default {RESULTS})"
    )
    args = parser.parse_args()
    results_dir = args.results_dir or (RESULTS / "quick" if args.quick else RESULTS)
    rows = []
    for name in args.only or list(BENCHMARKS):
        started = time.perf_counter()
        result = BENCHMARKS[name][1 if args.quick else 0]()
        path = write_result(name, result, results_dir)
        seconds = time.perf_counter() - started
        for key, label in HEADLINES.get(name, []):
            value = result.get(key)
            text = f"{value:.3g}" if isinstance(value, float) else json.dumps(value)
            rows.append((name, label, text))
        if name == "gpu":
            text = result.get("skipped") or f"{len(result['training'])} training configs"
            rows.append((name, "status", text))
        print(f"{name}: {seconds:.0f} s -> {path}", flush=True)
    width = max(len(r[1]) for r in rows)
    print()
    for name, label, value in rows:
        print(f"{name:<12} {label:<{width}}  {value}")


if __name__ == "__main__":
    main()
