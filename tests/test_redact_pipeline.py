"""Redaction over a real pipeline run: the tiny model decodes a spoken identifier (forced by
term biasing), the tiny aligner times its words, and `transcribe --redact` and
`redact --audio` act on exactly those words."""

import json

import numpy as np
import pytest
import soundfile as sf

from voxadapt.decoding import DecodeOptions
from voxadapt.stages.redact import RedactConfig, redact
from voxadapt.stages.transcribe import TranscribeConfig, transcribe

from conftest import CLIPS

pytest.importorskip("kiwipiepy")


def rows_of(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
def test_redaction_acts_on_the_words_the_aligner_timed(tmp_path, tiny_model, tiny_aligner):
    from voxadapt.redact import Redactor

    terms = tmp_path / "terms.txt"
    terms.write_text("010-1234-5678\n", encoding="utf-8")
    decode = DecodeOptions(max_new_tokens=24, num_workers=0, bias_terms=terms, bias_weight=100)
    runs = {}
    for redacting in (False, True):
        out = tmp_path / f"{'redacted' if redacting else 'plain'}.jsonl"
        transcribe(
            TranscribeConfig(
                inputs=[CLIPS[0]],
                out=out,
                model=str(tiny_model),
                quantization="none",
                aligner=str(tiny_aligner),
                redact=redacting,
                decode=decode,
            )
        )
        runs[redacting] = rows_of(out)[0]
    plain, redacted = runs[False], runs[True]
    assert "010-1234-5678" in plain["text"] and plain["words"]
    expected, _ = Redactor.load().redact_row(plain)
    assert redacted["text"] == expected["text"] and "1234" not in redacted["text"]
    assert redacted["words"] == expected["words"]

    result = redact(
        RedactConfig(
            inputs=[tmp_path / "plain.jsonl"],
            out_dir=tmp_path / "out",
            audio=True,
            audio_margin_s=0.1,
        )
    )
    assert result.audio_untimed == []
    (written,) = result.audio_written
    records = rows_of(tmp_path / "out" / "redactions.jsonl")
    spans = [(r["start_s"], r["end_s"]) for r in records if r["field"] == "text"]
    assert spans, "the identifier's words carry times"
    original, rate = sf.read(CLIPS[0], dtype="float32")
    silenced, out_rate = sf.read(tmp_path / "out" / "audio" / written, dtype="float32")
    assert out_rate == rate and len(silenced) == len(original)
    inside = np.zeros(len(original), dtype=bool)
    for start, end in spans:
        inside[max(0, int(np.floor((start - 0.1) * rate))) : int(np.ceil((end + 0.1) * rate))] = (
            True
        )
    assert inside.any() and np.all(silenced[inside] == 0)
    assert np.array_equal(silenced[~inside], original[~inside])
