"""Long-form transcription: VAD segments decoded in batches vs one pass (`--no-vad`).

A consultation-like recording (the bundled Korean clips with 1.2-2.6 s pauses, repeated to
`minutes`) is transcribed by `voxadapt transcribe` both ways, each in a fresh process, with
the same tiny model, the same duration-based token cap (15 tokens per second of audio: a
random model never stops early, so both generate about as many tokens) and the same machine.
Reported: RTFx (audio seconds per wall second) and peak resident memory of each, and their
ratio.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from bench.common import tiny_model, workdir

_RUN = """
import json, resource, sys, time
from pathlib import Path
from voxadapt.decoding import DecodeOptions
from voxadapt.stages.transcribe import TranscribeConfig, transcribe
started = time.perf_counter()
transcribe(TranscribeConfig(inputs=[Path(sys.argv[1])], model=sys.argv[2], quantization="none",
                            decode=DecodeOptions(num_workers=0, vad=sys.argv[3] == "vad")))
print(json.dumps({"seconds": time.perf_counter() - started,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _recording(path: Path, minutes: float) -> float:
    clips = sorted((Path(__file__).parents[1] / "src/voxadapt/samples/clips").glob("*.wav"))
    parts, total, index = [], 0.0, 0
    while total < minutes * 60:
        samples, rate = sf.read(clips[index % len(clips)], dtype="float32")
        pause = np.zeros(int((1.2 + 0.2 * (index % 8)) * rate), dtype=np.float32)
        parts += [pause, samples]
        total += (len(pause) + len(samples)) / rate
        index += 1
    sf.write(path, np.concatenate(parts), rate, subtype="PCM_16")
    return total


def _run(recording: Path, model: Path, mode: str) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", _RUN, str(recording), str(model), mode],
        capture_output=True,
        text=True,
        check=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", **_python_env()},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _python_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k.startswith(("PYTHON", "HOME", "OMP"))}


def run(minutes: float = 3.0) -> dict[str, Any]:
    with workdir() as tmp:
        root = Path(tmp)
        model = tiny_model(root)
        recording = root / "consultation.wav"
        audio_s = _recording(recording, minutes)
        started = time.perf_counter()
        long_form = _run(recording, model, "vad")
        one_pass = _run(recording, model, "no-vad")
        return {
            "inputs": f"{audio_s:.0f} s recording (bundled clips with 1.2-2.6 s pauses), "
            "tiny Voxtral on CPU, cap 20 + 15 tokens/s, fresh process per mode",
            "audio_s": audio_s,
            "rtfx": {
                "long_form": audio_s / long_form["seconds"],
                "no_vad": audio_s / one_pass["seconds"],
            },
            "peak_rss_mb": {
                "long_form": long_form["peak_rss_mb"],
                "no_vad": one_pass["peak_rss_mb"],
            },
            "speedup": one_pass["seconds"] / long_form["seconds"],
            "bench_seconds": time.perf_counter() - started,
        }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
