"""Scoring: voxadapt's jiwer/RapidFuzz CER/WER vs the seed's pure-Python edit-distance DP on
the same normalized reference/hypothesis pairs; counts must be identical.

python -m bench.scoring --pairs 10000
"""

from __future__ import annotations

import argparse
import random
from typing import Any

from bench.common import SENTENCES, ratio, timed, write_result
from voxadapt.scoring.edits import char_edits, word_edits
from voxadapt.text import normalize_for_scoring


def seed_edit_distance(reference, hypothesis) -> int:
    """The seed's Levenshtein: a full Python DP table per pair."""
    rows, cols = len(reference) + 1, len(hypothesis) + 1
    table = [[0] * cols for _ in range(rows)]
    for i in range(rows):
        table[i][0] = i
    for j in range(cols):
        table[0][j] = j
    for i in range(1, rows):
        for j in range(1, cols):
            cost = 0 if reference[i - 1] == hypothesis[j - 1] else 1
            table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + cost)
    return table[-1][-1]


def make_pairs(n_pairs: int, seed: int = 0) -> list[tuple[str, str]]:
    """References from clinical sentences; hypotheses with random character edits/spacing."""
    rng = random.Random(seed)
    syllables = "가나다라마바사아자차카타파하혈압약체온검사통증"
    pairs = []
    for _ in range(n_pairs):
        reference = " ".join(rng.sample(SENTENCES, 2))
        chars = list(reference)
        for _ in range(rng.randint(0, 6)):
            position = rng.randrange(len(chars))
            action = rng.choice(("sub", "del", "ins", "space"))
            if action == "sub":
                chars[position] = rng.choice(syllables)
            elif action == "del":
                del chars[position]
            elif action == "ins":
                chars.insert(position, rng.choice(syllables))
            else:
                chars.insert(position, " ")
        pairs.append((normalize_for_scoring(reference), normalize_for_scoring("".join(chars))))
    return pairs


def run(pairs: int = 10000, repeats: int = 3) -> dict[str, Any]:
    data = make_pairs(pairs)
    results: dict[str, list[int]] = {}

    def seed(_):
        results["seed"] = [
            seed_edit_distance("".join(r.split()), "".join(h.split())) for r, h in data
        ] + [seed_edit_distance(r.split(), h.split()) for r, h in data]

    def ours(_):
        results["ours"] = [char_edits(r, h).errors for r, h in data] + [
            word_edits(r, h).errors for r, h in data
        ]

    seed_time = timed(seed, repeats)
    ours_time = timed(ours, repeats)
    return {
        "inputs": f"{pairs} normalized pairs (two clinical sentences each, 0-6 random edits)",
        "repeats": repeats,
        "pairs_per_s (CER + WER)": {
            "seed": seed_time.rate(pairs),
            "voxadapt": ours_time.rate(pairs),
        },
        "speedup": ratio(ours_time.rate(pairs), seed_time.rate(pairs)),
        "identical_counts": results["seed"] == results["ours"],
        "targets": {"speedup": ">= 20", "identical_counts": True},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(write_result("scoring", run(args.pairs, args.repeats)).read_text())


if __name__ == "__main__":
    main()
