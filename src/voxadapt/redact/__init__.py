"""De-identify Korean transcripts: the identifiers of consultation speech, in digits and as
spoken, replaced by typed tags.

```python
from voxadapt.redact import Redactor

redactor = Redactor.load()  # once: builds the recognizers (Presidio registry, Kiwi)
text, spans = redactor.redact_text("전화번호는 공일공 일이삼사 오육칠팔이에요")
# "전화번호는 [전화번호]이에요", [Span(type="phone", start=6, end=19, detector=...)]
row, records = redactor.redact_row(transcript_row)  # text fields, segments and words
```

Types and their tags (`TAGS`): resident_number [주민등록번호], foreigner_number
[외국인등록번호], phone [전화번호], name [이름], address [주소], email [이메일], account
[계좌번호], card [카드번호], insurance [건강보험번호], patient_number [환자번호], birth_date
[생년월일], passport [여권번호], driver_licence [운전면허번호], other_id [식별번호] (a long
number no rule names). Medical numbers (doses, vitals, durations, counts) are kept.
Needs the `redact` extra (presidio-analyzer, kiwipiepy), imported only by `Redactor.load`.
"""

from voxadapt.redact.engine import INSTALL_HINT, TEXT_FIELDS, Redactor, Span
from voxadapt.redact.types import STRUCTURED, TAGS, resolve_types

__all__ = ["INSTALL_HINT", "STRUCTURED", "TAGS", "TEXT_FIELDS", "Redactor", "Span", "resolve_types"]
