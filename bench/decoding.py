"""Decoding: `voxadapt transcribe`'s batched KV-cached greedy decoding vs the seed's loop (one
file at a time through the processor, generate with use_cache=False), tiny model, the same
number of generated tokens per utterance.

python -m bench.decoding --clips 48 --tokens 40
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch

from bench.common import make_clips, ratio, timed, tiny_model, workdir, write_result
from voxadapt.decoding import AudioItem, DecodeOptions, Transcriber
from voxadapt.manifest import read_manifest


def seed_loop(model, processor, paths: list[str], tokens: int) -> list[str]:
    """inference_asr.py's evaluation loop: per file, processor then generate without cache."""
    texts = []
    for path in paths:
        inputs = processor.apply_transcription_request(audio=path, model_id="x", language="ko")
        with torch.no_grad():
            output = model.generate(
                **inputs,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                use_cache=False,
            )
        new = output[0, inputs["input_ids"].shape[1] :]
        texts.append(processor.tokenizer.decode(new, skip_special_tokens=True))
    return texts


def run(
    clips: int = 48, tokens: int = 40, repeats: int = 3, batch_size: int = 16, root=None
) -> dict[str, Any]:
    with workdir() as tmp:
        root = Path(root or tmp)
        model_dir = tiny_model(root)
        data = make_clips(root / "data", clips)
        utterances = read_manifest(data["manifest"])
        transcriber = Transcriber.load(model_dir, quantization="none", device="cpu")
        processor = __import__("transformers").AutoProcessor.from_pretrained(model_dir)
        items = [AudioItem(u.id, u.audio, u.duration) for u in utterances]
        workers = min(2, os.cpu_count() or 1)
        options = DecodeOptions(
            batch_size=batch_size, max_new_tokens=tokens, min_new_tokens=tokens,
            num_workers=workers,
        )  # fmt: skip
        ours_texts: dict[str, str] = {}

        def ours(_):
            for batch in transcriber.transcribe(items, options):
                ours_texts.update({i.id: t.text for i, t in batch})

        seed_texts: list[str] = []

        def seed(_):
            seed_texts[:] = seed_loop(
                transcriber.model, processor, [u.audio for u in utterances], tokens
            )

        seed_time = timed(seed, repeats)
        ours_time = timed(ours, repeats)
        audio_s = sum(u.duration for u in utterances)
        same = sum(ours_texts[u.id] == t.strip() for u, t in zip(utterances, seed_texts))
        return {
            "inputs": f"{clips} clips 3-25 s ({audio_s:.0f} s audio), tiny Voxtral on CPU, "
            f"{tokens} generated tokens each, {data['source']}",
            "repeats": repeats,
            "utterances_per_s": {"seed": seed_time.rate(clips), "voxadapt": ours_time.rate(clips)},
            "rtfx": {"seed": audio_s / seed_time.median, "voxadapt": audio_s / ours_time.median},
            "speedup": ratio(ours_time.rate(clips), seed_time.rate(clips)),
            "identical_transcripts": f"{same}/{clips}",
            "batch_size": batch_size,
            "targets": {"speedup": ">= 20"},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(write_result("decoding", run(args.clips, args.tokens, args.repeats)).read_text())


if __name__ == "__main__":
    main()
