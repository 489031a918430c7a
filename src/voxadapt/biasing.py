"""Logits processing for decoding: contextual biasing toward domain terms (`TermBias`, shallow
fusion over a token trie) and the recorder of each chosen token's log-probability.

`voxadapt.decoding` applies both inside `generate_batch`; `serve` builds a request's
`TermBias` from its own terms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from voxadapt.text import read_term_lines

if TYPE_CHECKING:
    import torch

if TYPE_CHECKING:
    from voxadapt.families import Prompts

# Log-probability bonus per term token; 100 already forces any term it can start.
MAX_BIAS_WEIGHT = 100.0


class LogprobRecorder:
    """A logits processor that changes nothing and records, per step, the log-probability
    of the token greedy decoding picks (the argmax of the final scores)."""

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        self.steps.append(torch.log_softmax(scores.float(), dim=-1).max(dim=-1).values)
        return scores

    def rows(self) -> list[list[float]]:
        import torch

        if not self.steps:
            return []
        return torch.stack(self.steps, dim=1).cpu().tolist()  # one device sync at the end


class TermBias:
    """Contextual biasing by shallow fusion over a token trie of the bias terms.

    Each spelling is tokenized as it starts a transcript and as it follows a space. At every
    step a row gets `weight` added to each token that continues a term it is part-way
    through, or, when it is in no term, to each token that starts one; if it leaves a
    partial term instead, the bonus it collected for that prefix is taken back (subtracted
    from every token that does not continue it), so a term that is begun and abandoned ends
    up unfavoured, not favoured.
    """

    def __init__(self, token_sequences: list[list[int]], weight: float) -> None:
        self.weight = weight
        self.root: dict = {}
        for tokens in token_sequences:
            node = self.root
            for token in tokens:
                node = node.setdefault(token, {})

    @classmethod
    def from_file(cls, path: Path, prompts: Prompts, weight: float) -> TermBias:
        """The bias of a terms file, tokenized by `prompts`' tokenizer."""
        return cls.from_terms([s for _, s in read_term_lines(path)], prompts, weight)

    @classmethod
    def from_terms(
        cls, terms: Sequence[Sequence[str]], prompts: Prompts, weight: float
    ) -> TermBias:
        """The bias of term variant sets (each a list of spellings, as a terms file line)."""
        sequences = []
        for spellings in terms:
            for spelling in spellings:
                for text in (spelling, " " + spelling):
                    tokens = prompts.text_tokens(text)
                    if tokens:
                        sequences.append(tokens)
        return cls(sequences, weight)

    def processor(self, prompt_width: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """A transformers logits processor for a batch whose prompts are `prompt_width` long."""
        import torch

        def process(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            scores = scores.clone()
            for row, generated in enumerate(input_ids[:, prompt_width:].tolist()):
                nodes, depth = self._partial(generated)  # terms part-way through
                bonus = torch.full(
                    (scores.shape[1],),
                    -self.weight * depth,
                    dtype=scores.dtype,
                    device=scores.device,
                )
                # part-way through a term: only its continuations; else any term's start
                continuing = (
                    set().union(*(set(node) for node in nodes)) if nodes else set(self.root)
                )
                if continuing:  # an empty terms file has no terms to favour
                    ids = torch.tensor(sorted(continuing), dtype=torch.long, device=scores.device)
                    bonus[ids] = self.weight
                scores[row] += bonus
            return scores

        return process

    def _partial(self, generated: list[int]) -> tuple[list[dict], int]:
        """The trie nodes the last tokens reach (terms part-way through) and the longest
        such prefix's length in tokens."""
        active: list[tuple[dict, int]] = []
        for token in generated:
            advanced = [(node[token], depth + 1) for node, depth in active if token in node]
            if token in self.root:
                advanced.append((self.root[token], 1))
            active = [(node, depth) for node, depth in advanced if node]  # complete: done
        return [node for node, _ in active], max((depth for _, depth in active), default=0)
