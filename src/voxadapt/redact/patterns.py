"""Hospital patient / chart / registration numbers: a small YAML file says how they are named
and shaped where you work (configs/redact-patterns.yaml is the documented example):

```yaml
patient_number:
  cues: [등록번호, 차트번호, 환자번호]   # spoken before the number; matched without spaces
  min_digits: 6                         # a number after a cue with this many digits
  max_digits: 10
  patterns:                              # written forms, as regular expressions
    - name: chart
      regex: "[A-Z]{1,2}-?\\d{6,8}"
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from voxadapt.errors import ConfigError

DEFAULT_CUES = (
    "등록번호", "환자번호", "차트번호", "차트넘버", "병록번호", "진료번호", "진료카드번호",
    "의무기록번호", "입원번호", "외래번호", "환자아이디", "병원번호",
)  # fmt: skip


@dataclass(frozen=True)
class PatientNumberPatterns:
    """How patient numbers are said and written (see the module docstring)."""

    cues: tuple[str, ...] = DEFAULT_CUES
    min_digits: int = 6
    max_digits: int = 10
    patterns: tuple[tuple[str, str], ...] = field(default=())  # (name, regex)


def load_patterns(path: Path | None) -> PatientNumberPatterns:
    """The patterns of `path` (None: the built-in cues, 6-10 digits, no written patterns)."""
    if path is None:
        return PatientNumberPatterns()
    from voxadapt.config import load_yaml

    data = load_yaml(Path(path)).get("patient_number") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: patient_number must be a mapping (cues, min_digits, ...)")
    problems = []
    cues = data.get("cues", DEFAULT_CUES)
    if not isinstance(cues, list | tuple) or not all(isinstance(c, str) and c for c in cues):
        problems.append("cues must be a list of words")
        cues = DEFAULT_CUES
    low, high = data.get("min_digits", 6), data.get("max_digits", 10)
    if not (isinstance(low, int) and isinstance(high, int) and 1 <= low <= high):
        problems.append("min_digits and max_digits must be whole numbers, 1 <= min <= max")
    patterns = []
    for number, entry in enumerate(data.get("patterns") or [], start=1):
        regex = entry.get("regex") if isinstance(entry, dict) else None
        try:
            re.compile(regex or "")
        except re.error as exc:
            problems.append(f"patterns[{number}]: bad regex ({exc})")
            continue
        if not regex:
            problems.append(f"patterns[{number}]: give a regex")
            continue
        patterns.append((str(entry.get("name") or f"pattern{number}"), regex))
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems), problems)
    spaced = tuple("".join(cue.split()) for cue in cues)
    return PatientNumberPatterns(spaced, low, high, tuple(patterns))
