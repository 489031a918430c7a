"""Word timestamps: what `--aligner` costs against decoding, on the same clips.

The clips are transcribed by the decoding engine (tiny Voxtral, the same number of generated
tokens per clip), then those transcripts are timed by the forced aligner (tiny Qwen3 aligner,
one forward pass per batch, no generation) through `Aligner.align`, as `transcribe --aligner`
does. Both on CPU, both tiny: the ratio says what the aligner's pass adds to the pipeline
(feature extraction, the encoder over the clip, one decoder pass over audio and words), not
what the 0.6B aligner costs next to a 3B Voxtral on a GPU.

python -m bench.align --clips 24 --tokens 40
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from bench.common import make_clips, timed, tiny_model, workdir, write_result
from voxadapt.alignment import Aligner, AlignmentRequest
from voxadapt.decoding import AudioItem, DecodeOptions, Transcriber
from voxadapt.manifest import read_manifest


def tiny_aligner(root: Path) -> Path:
    from voxadapt.families.qwen3_asr_checkpoint import build_tiny_qwen3_aligner

    path = root / "tiny-aligner"
    if not (path / "model.safetensors").exists():
        build_tiny_qwen3_aligner(path)
    return path


def run(
    clips: int = 24, tokens: int = 40, repeats: int = 3, batch_size: int = 8, root=None
) -> dict[str, Any]:
    with workdir() as tmp:
        root = Path(root or tmp)
        data = make_clips(root / "data", clips)
        utterances = read_manifest(data["manifest"])
        transcriber = Transcriber.load(tiny_model(root), quantization="none", device="cpu")
        aligner = Aligner.load(tiny_aligner(root), device="cpu")
        items = [AudioItem(u.id, u.audio, u.duration) for u in utterances]
        options = DecodeOptions(
            batch_size=batch_size, max_new_tokens=tokens, min_new_tokens=tokens,
            num_workers=min(2, os.cpu_count() or 1),
        )  # fmt: skip
        texts: dict[str, str] = {}

        def decode(_):
            for batch in transcriber.transcribe(items, options):
                texts.update({item.id: transcript.text for item, transcript in batch})

        words: list[list] = []

        def align(_):
            requests = [
                AlignmentRequest(u.audio, None, 0.0, u.duration, texts[u.id], "ko")
                for u in utterances
            ]
            words[:] = aligner.align(requests, batch_size=batch_size)

        decode_time = timed(decode, repeats)
        align_time = timed(align, repeats)
        audio_min = sum(u.duration for u in utterances) / 60
        per_min = {
            "decoding": {k: v / audio_min for k, v in _seconds(decode_time).items()},
            "aligner": {k: v / audio_min for k, v in _seconds(align_time).items()},
        }
        return {
            "inputs": f"{clips} clips 3-25 s ({audio_min:.1f} min audio), {data['source']}; "
            f"tiny Voxtral decoding {tokens} tokens a clip, tiny Qwen3 aligner, CPU, "
            f"batch {batch_size}",
            "repeats": repeats,
            "seconds_per_audio_minute": per_min,
            # aligner seconds per decoding second on the same audio (< 1: cheaper)
            "aligner_vs_decoding": align_time.median / decode_time.median,
            "words_timed": sum(len(w) for w in words),
            "batch_size": batch_size,
        }


def _seconds(timing) -> dict[str, float]:
    return {"median": timing.median, "min": min(timing.seconds), "max": max(timing.seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(write_result("align", run(args.clips, args.tokens, args.repeats)).read_text())


if __name__ == "__main__":
    main()
