"""Training padding: does length-grouped batching pay for itself? (issue: measure first).

A training row is the transcription prompt (375 [AUDIO] tokens per 30 s chunk + ~10) and the
transcript's tokens; a micro-batch is right-padded to its longest row, so the decoder computes
rows x longest tokens. We compare random micro-batches (what `train` does) with length-grouped
ones (Hugging Face's `group_by_length`: sort by length inside windows of 50 micro-batches,
shuffle the batches) on transcripts whose length follows the clip duration, with the real
prompt builder and tokenizer of the tiny model. The metric is padded tokens / real tokens.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from bench.common import SENTENCES, tiny_model, workdir


def _rows(n: int, seed: int) -> list[int]:
    """Token count of n training rows: clips of 3-25 s (the prepare defaults), transcripts of
    ~7 syllables per second as in Korean conversational speech."""
    from voxadapt.families import load_frontend

    with workdir() as root:
        prompts = load_frontend(tiny_model(Path(root))).prompts
    generator = random.Random(seed)
    rows = []
    for _ in range(n):
        seconds = generator.uniform(3, 25)
        text = ""
        while len(text.replace(" ", "")) < 7 * seconds:
            text += generator.choice(SENTENCES) + " "
        rows.append(len(prompts.prompt(1, "ko")) + len(prompts.target(text[: int(8 * seconds)])))
    return rows


def _padding(batches: list[list[int]]) -> float:
    padded = sum(len(b) * max(b) for b in batches)
    real = sum(sum(b) for b in batches)
    return (padded - real) / real


def run(n: int = 4000, batch_size: int = 8, seed: int = 0) -> dict[str, Any]:
    lengths = _rows(n, seed)
    generator = random.Random(seed)
    order = list(range(n))
    generator.shuffle(order)
    random_batches = [
        [lengths[i] for i in order[s : s + batch_size]] for s in range(0, n, batch_size)
    ]
    window = 50 * batch_size
    grouped = []
    for start in range(0, n, window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        grouped += [
            [lengths[i] for i in chunk[s : s + batch_size]]
            for s in range(0, len(chunk), batch_size)
        ]
    random_padding, grouped_padding = _padding(random_batches), _padding(grouped)
    return {
        "inputs": f"{n} rows, 3-25 s clips, ~7 syllables/s transcripts, batch {batch_size}",
        "mean_row_tokens": sum(lengths) / n,
        "padding_per_real_token": {"random": random_padding, "length_grouped": grouped_padding},
        "decoder_tokens_saved_by_grouping": 1 - (1 + grouped_padding) / (1 + random_padding),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
