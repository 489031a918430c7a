"""voxadapt: adapt a speech LLM (Mistral's Voxtral or Qwen3-ASR) to Korean (medical) speech.

Importing the package imports nothing else: the console script answers `--help` and
`--version` before any stage (and torch) is imported.
"""

__version__ = "0.1.0"
