"""Prepare: files/s of header probing + validation, 1 core vs all cores, vs the seed's
single-threaded duration loop (cut_audio.py: read every file's duration, one by one).

python -m bench.prepare_probe --files 3000
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.common import timed, write_result
from voxadapt.stages.prepare import PrepareConfig, prepare


def seed_durations(scp: Path) -> list[float]:
    """The seed's filter: soundfile's duration of each listed file, single-threaded."""
    durations = []
    for line in scp.read_text(encoding="utf-8").splitlines():
        path = line.split("|", 1)[0]
        durations.append(sf.info(path).duration)
    return durations


def make_corpus(root: Path, n_files: int, seed: int = 0) -> Path:
    """n_files 48 kHz 16-bit WAVs of 3-25 s (noise: probing does not look at content) + an SCP."""
    rng = np.random.default_rng(seed)
    base = (rng.standard_normal(48000 * 25) * 0.05).astype(np.float32)
    lines = []
    for i in range(n_files):
        seconds = float(rng.uniform(3, 25))
        path = root / f"spk{i % 100:03d}" / f"utt{i:06d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, base[: int(seconds * 48000)], 48000, subtype="PCM_16")
        lines.append(f"{path}|환자분 혈압을 재겠습니다 {i}")
    scp = root / "all.scp"
    scp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return scp


def run(n_files: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        scp = make_corpus(root / "corpus", n_files)
        results = {}
        for jobs in (1, os.cpu_count() or 1):
            rates = []
            for r in range(repeats):
                config = PrepareConfig(scp, "scp", root / f"out{jobs}_{r}", jobs=jobs)
                started = time.perf_counter()
                result = prepare(config)
                total = time.perf_counter() - started
                rates.append(
                    {
                        "probe_files_per_s": result.stats["probe"]["files_per_second"],
                        "end_to_end_files_per_s": n_files / total,
                    }
                )
            results[f"jobs={jobs}"] = {
                key: {
                    "median": statistics.median(r[key] for r in rates),
                    "min": min(r[key] for r in rates),
                    "max": max(r[key] for r in rates),
                }
                for key in rates[0]
            }
        seed = timed(lambda _: seed_durations(scp), repeats).rate(n_files)
        results["seed_files_per_s"] = seed
        one, many = results["jobs=1"], results[f"jobs={os.cpu_count() or 1}"]
        results["probe_vs_seed_all_cores"] = many["probe_files_per_s"]["median"] / seed["median"]
        results["speedup_all_cores"] = (
            many["probe_files_per_s"]["median"] / one["probe_files_per_s"]["median"]
        )
        return {"files": n_files, "repeats": repeats, "cores": os.cpu_count(), **results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(write_result("prepare", run(args.files, args.repeats)).read_text())


if __name__ == "__main__":
    main()
