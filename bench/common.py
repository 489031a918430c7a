"""Shared benchmark helpers: test audio, timing with repetitions, results files."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

RESULTS = Path(__file__).parent / "results"

# Our own Korean clinical sentences for espeak-ng (any length mix gives 3-25 s clips).
SENTENCES = [
    "환자분 오늘 혈압은 백삼십에 팔십으로 조금 높습니다",
    "식사 후 삼십 분 뒤에 이 약을 하루 세 번 드세요",
    "어제부터 가슴이 답답하고 숨이 차다고 하셨지요",
    "내일 오전 아홉 시에 공복으로 혈액검사를 하겠습니다",
    "체온이 삼십팔 도까지 올라서 해열제를 투여했습니다",
    "수술 부위에 통증이 있으면 바로 간호사를 불러 주세요",
    "당뇨가 있으시니까 혈당을 하루 두 번 재 주셔야 합니다",
    "엑스레이 결과는 정상이고 폐렴 소견은 보이지 않습니다",
    "어지럼증이 언제부터 시작되었는지 말씀해 주시겠어요",
    "알레르기가 있는 약이 있으면 미리 알려 주세요",
]


@dataclass
class Timing:
    """Seconds of several repetitions of one measurement."""

    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def rate(self, items: float) -> dict[str, float]:
        """items/s: median, and the spread (min..max) over repetitions."""
        rates = [items / s for s in self.seconds]
        return {"median": items / self.median, "min": min(rates), "max": max(rates)}


def timed(fn: Callable[[int], Any], repeats: int) -> Timing:
    """Run fn(repetition) `repeats` times; wall seconds of each."""
    seconds = []
    for repetition in range(repeats):
        started = time.perf_counter()
        fn(repetition)
        seconds.append(time.perf_counter() - started)
    return Timing(seconds)


def machine() -> dict[str, Any]:
    import torch

    info = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _espeak(text: str, path: Path, voice_speed: int) -> bool:
    if not shutil.which("espeak-ng"):
        return False
    result = subprocess.run(
        ["espeak-ng", "-v", "ko", "-s", str(voice_speed), "-w", str(path), text],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0 and path.exists()


def speech_pool(root: Path) -> tuple[list[np.ndarray], str]:
    """Korean speech snippets at 16 kHz: espeak-ng when installed, else the bundled clips
    (which espeak-ng made)."""
    root.mkdir(parents=True, exist_ok=True)
    pool = []
    for index, sentence in enumerate(SENTENCES):
        path = root / f"s{index}.wav"
        if not _espeak(sentence, path, 150 + 10 * (index % 3)):
            break
        samples, rate = sf.read(path, dtype="float32")
        pool.append(soxr.resample(samples, rate, 16000) if rate != 16000 else samples)
    if len(pool) == len(SENTENCES):
        return pool, "espeak-ng -v ko"
    from voxadapt.stages.demo import sample_scp

    clips = sorted(sample_scp().parent.glob("clips/*.wav"))
    return [sf.read(p, dtype="float32")[0] for p in clips], "bundled espeak-ng clips"


def make_clips(root: Path, n_clips: int, *, seed: int = 0, rate: int = 48000) -> dict[str, Any]:
    """n_clips WAVs of 3-25 s Korean speech at `rate` (AI-Hub audio is 48 kHz) + a manifest."""
    from voxadapt.manifest import Utterance, write_jsonl

    rng = np.random.default_rng(seed)
    pool, source = speech_pool(root / "speech")
    pause = np.zeros(3200, dtype=np.float32)  # 0.2 s between sentences
    utterances = []
    for index in range(n_clips):
        seconds = float(rng.uniform(3, 25))
        parts, total = [], 0
        while total < seconds * 16000:
            part = pool[int(rng.integers(len(pool)))]
            parts += [part, pause]
            total += len(part) + len(pause)
        audio = np.concatenate(parts)[: int(seconds * 16000)]
        audio = soxr.resample(audio, 16000, rate) if rate != 16000 else audio
        path = root / "clips" / f"spk{index % 20:02d}" / f"clip{index:04d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio, rate, subtype="PCM_16")
        utterances.append(
            Utterance(
                f"clip{index:04d}",
                str(path),
                "환자분 혈압을 재겠습니다",
                "환자분 혈압을 재겠습니다",
                seconds,
                rate,
                1,
                speaker=f"spk{index % 20:02d}",
            )
        )
    manifest = root / "clips.jsonl"
    write_jsonl(manifest, utterances)
    return {"manifest": manifest, "source": source, "seconds": [u.duration for u in utterances]}


def tiny_model(root: Path) -> Path:
    from voxadapt.tiny import build_tiny_voxtral

    path = root / "tiny-voxtral"
    if not (path / "model.safetensors").exists():
        build_tiny_voxtral(path)
    return path


def workdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="voxadapt-bench-")


def write_result(name: str, result: dict[str, Any], results_dir: Path | None = None) -> Path:
    results_dir = Path(results_dir or RESULTS)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2, ensure_ascii=False))
    return path


def ratio(ours: dict[str, float], seed: dict[str, float]) -> float:
    return ours["median"] / seed["median"]
