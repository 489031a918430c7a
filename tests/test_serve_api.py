"""The transcription API's fields, streaming and several adapters, against the official
`openai` client and raw requests. Every server binds 127.0.0.1; every load is bounded."""

import concurrent.futures
import json
import math
import shutil
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from safetensors.torch import load_file, save_file
from test_serve import Running, config, post

from voxadapt.decoding import AudioItem, DecodeOptions, Transcriber
from voxadapt.errors import ConfigError
from voxadapt.serving.engine import BatchingEngine, Job, QueueFull
from voxadapt.stages.serve import ServeConfig, build_server
from voxadapt.stages.transcribe import TranscribeConfig, transcribe

from conftest import CLIPS

openai = pytest.importorskip("openai")

# long enough that a transcript has many tokens (the tiny random model rarely stops early)
LONG = DecodeOptions(max_new_tokens=40, min_new_tokens=40, num_workers=0)
URL = "/v1/audio/transcriptions"


@pytest.fixture(scope="module")
def server(tiny_model):
    running = Running(config(tiny_model, decode=LONG))
    running.wait_ready()
    yield running
    running.stop()


def long_recording(folder, copies: int = 2):
    """Clips with 1.4 s pauses between them: long-form (several VAD segments)."""
    parts = []
    for clip in CLIPS * copies:
        samples, rate = sf.read(clip, dtype="float32")
        parts += [np.zeros(int(1.4 * rate), dtype=np.float32), samples]
    path = folder / "long.wav"
    sf.write(path, np.concatenate(parts), rate)
    return path


def error_of(status_body):
    status, _, body = status_body
    return status, json.loads(body)["error"]


# -------------------------------------------------------------------------- streaming


def test_a_stream_yields_deltas_and_one_done_equal_to_the_plain_answer(server):
    client = server.client()
    with CLIPS[0].open("rb") as audio:
        plain = client.audio.transcriptions.create(model="ko-med", file=audio)
    with CLIPS[0].open("rb") as audio:
        events = list(client.audio.transcriptions.create(model="ko-med", file=audio, stream=True))
    kinds = [e.type for e in events]
    assert kinds[-1] == "transcript.text.done" and kinds.count("transcript.text.done") == 1
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert len(deltas) >= 2, "tokens arrive as they are generated, not all at the end"
    assert "".join(deltas) == events[-1].text == plain.text != ""
    assert events[-1].usage.output_tokens == plain.usage.output_tokens == 40
    # text streams too; formats that cannot stream are a 400 naming the field
    status, headers, body = post(
        server.url + URL, {"model": "ko-med", "stream": "true", "response_format": "text"}, CLIPS[0]
    )
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert body.decode().count("transcript.text.done") == 1
    for fmt in ("srt", "vtt", "verbose_json"):
        fields = {"model": "ko-med", "stream": "true", "response_format": fmt}
        status, error = error_of(post(server.url + URL, fields, CLIPS[0]))
        assert status == 400 and error["param"] == "stream" and fmt in error["message"]


@pytest.mark.slow
def test_a_long_recording_streams_segment_by_segment(server, tmp_path):
    long = long_recording(tmp_path)
    client = server.client()
    with long.open("rb") as audio:
        verbose = client.audio.transcriptions.create(
            model="ko-med", file=audio, response_format="verbose_json"
        )
    with long.open("rb") as audio:
        events = list(client.audio.transcriptions.create(model="ko-med", file=audio, stream=True))
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    spoken = [s for s in verbose.segments if s.text]
    assert len(spoken) >= 3 and len(deltas) == len(spoken)
    assert "".join(deltas) == events[-1].text == verbose.text


def test_a_client_that_leaves_a_stream_stops_its_decoding(tiny_model):
    endless = DecodeOptions(max_new_tokens=5000, min_new_tokens=5000, num_workers=0)
    running = Running(config(tiny_model, decode=endless))
    try:
        running.wait_ready()
        engine = running.state.engine
        client = running.client()
        with CLIPS[0].open("rb") as audio:
            stream = client.audio.transcriptions.create(model="ko-med", file=audio, stream=True)
            first = next(iter(stream))
            assert first.type == "transcript.text.delta"
            stream.close()  # hang up after the first piece of text
        deadline = time.monotonic() + 120
        while engine.stopped_rows == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert engine.stopped_rows == 1
        while engine.depth() or not engine._queue.empty():
            time.sleep(0.1)
        assert not any(running.state.uploads.iterdir())
    finally:
        running.stop()


# ----------------------------------------------------------------- fields, honoured


def test_keywords_bias_like_hotwords(server):
    base = {"model": "ko-med", "bias_weight": "100"}
    by_hotwords = post(server.url + URL, {**base, "hotwords": "고혈압,CT|씨티"}, CLIPS[1])
    by_keywords = post(server.url + URL, {**base, "keywords[]": ["고혈압", "CT|씨티"]}, CLIPS[1])
    plain = post(server.url + URL, {"model": "ko-med"}, CLIPS[1])
    assert by_hotwords[0] == by_keywords[0] == 200
    assert json.loads(by_keywords[2])["text"] == json.loads(by_hotwords[2])["text"]
    assert json.loads(by_keywords[2])["text"] != json.loads(plain[2])["text"]
    many = {"model": "ko-med", "keywords[]": [f"t{i}" for i in range(101)]}
    assert error_of(post(server.url + URL, many, CLIPS[1]))[1]["param"] == "keywords"


def test_logprobs_usage_and_openai_segment_fields(server, tiny_model):
    client = server.client()
    with CLIPS[0].open("rb") as audio:
        result = client.audio.transcriptions.create(
            model="ko-med", file=audio, include=["logprobs"], response_format="json"
        )
    assert len(result.logprobs) == 40 and all(p.logprob <= 0 for p in result.logprobs)
    joined = b"".join(bytes(map(int, p.bytes)) for p in result.logprobs).decode("utf-8", "replace")
    assert joined.strip() == result.text
    prompts = Transcriber.load(str(tiny_model), quantization="none").prompts
    from voxadapt.features import features_for_file

    prompt = prompts.prompt_for(features_for_file(CLIPS[0], prompts.spec), "ko")
    usage = result.usage
    assert usage.type == "tokens" and usage.output_tokens == 40
    assert usage.input_tokens == len(prompt)
    assert usage.input_token_details.audio_tokens == prompt.count(prompts.audio_token_id)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    with CLIPS[0].open("rb") as audio:
        verbose = client.audio.transcriptions.create(
            model="ko-med", file=audio, response_format="verbose_json", include=["logprobs"]
        )
    segment = verbose.segments[0]
    mean = sum(p.logprob for p in result.logprobs) / 40
    assert segment.avg_logprob == pytest.approx(mean, abs=1e-5)
    assert len(segment.tokens) == 40 and segment.temperature == 0.0 and segment.seek == 0
    assert segment.compression_ratio > 0 and verbose.language == "ko"
    for fmt in ("text", "srt"):
        fields = {"model": "ko-med", "include[]": "logprobs", "response_format": fmt}
        assert error_of(post(server.url + URL, fields, CLIPS[0]))[1]["param"] == "include"
    bad = {"model": "ko-med", "include[]": "everything"}
    assert error_of(post(server.url + URL, bad, CLIPS[0]))[1]["param"] == "include"


def test_chunking_strategy_maps_onto_the_vad(server, tmp_path):
    long = long_recording(tmp_path)
    verbose = {"model": "ko-med", "response_format": "verbose_json"}

    def segments(extra: dict) -> int:
        status, _, body = post(server.url + URL, {**verbose, **extra}, long)
        assert status == 200, body
        return len(json.loads(body)["segments"])

    default = segments({})
    assert segments({"chunking_strategy": "auto"}) == default
    # pauses are 1.4 s: with silence_duration_ms 3000 they no longer end a segment
    assert segments({"chunking_strategy": json.dumps({"type": "server_vad"})}) == default
    joined = {
        "chunking_strategy[type]": "server_vad",
        "chunking_strategy[silence_duration_ms]": "3000",
    }
    assert segments(joined) < default
    for bad in (
        {"chunking_strategy": "sometimes"},
        {"chunking_strategy": json.dumps({"type": "server_vad", "eagerness": "high"})},
        {"chunking_strategy": json.dumps({"type": "server_vad", "threshold": 2})},
        {"chunking_strategy[type]": "client_vad"},
    ):
        status, error = error_of(post(server.url + URL, {**verbose, **bad}, CLIPS[0]))
        assert status == 400 and error["param"] == "chunking_strategy", bad


def test_fields_nobody_honours_are_refused_by_name(server):
    for name, value, param in (
        ("known_speaker_names[]", "김철수", "known_speaker_names[]"),
        ("languages[]", "ko", "languages[]"),
        ("seed", "1", "seed"),
        ("timestamp_granularities[]", "word", "timestamp_granularities"),  # no aligner
        ("stream", "maybe", "stream"),
        ("language", "tlh", "language"),
    ):
        status, error = error_of(post(server.url + URL, {"model": "ko-med", name: value}, CLIPS[0]))
        assert status == 400 and error["param"] == param, (name, error)


def test_language_auto_is_detection_and_reported(server):
    fields = {"model": "ko-med", "language": "auto", "response_format": "verbose_json"}
    status, headers, body = post(server.url + URL, fields, CLIPS[0])
    assert status == 200
    assert json.loads(body)["language"] is None  # Voxtral detects without naming it
    status, headers, _ = post(server.url + URL, {"model": "ko-med"}, CLIPS[0])
    assert headers["content-language"] == "ko"


def test_models_retrieve(server):
    client = server.client()
    assert client.models.retrieve("ko-med").id == "ko-med"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o-transcribe")


# ------------------------------------------------------------------------ qwen3-asr


@pytest.mark.slow
def test_a_prompt_is_qwen3_asr_context(tiny_qwen):
    running = Running(config(tiny_qwen, decode=DecodeOptions(max_new_tokens=8, num_workers=0)))
    try:
        running.wait_ready()
        client = running.client()
        with CLIPS[0].open("rb") as audio:
            plain = client.audio.transcriptions.create(model="ko-med", file=audio)
        with CLIPS[0].open("rb") as audio:
            prompted = client.audio.transcriptions.create(
                model="ko-med", file=audio, prompt="내과 외래: 고혈압, 메트포르민"
            )
        assert prompted.usage.input_tokens > plain.usage.input_tokens
        expected = transcribe(
            TranscribeConfig(
                inputs=[CLIPS[0]],
                model=str(tiny_qwen),
                quantization="none",
                decode=DecodeOptions(
                    max_new_tokens=8, num_workers=0, context="내과 외래: 고혈압, 메트포르민"
                ),
            )
        ).rows[0]["text"]
        assert prompted.text == expected
    finally:
        running.stop()


# ------------------------------------------------------------------- several adapters


@pytest.fixture(scope="module")
def second_lora(adapters, tmp_path_factory):
    """Another LoRA of the tiny model: the first with its B matrices scaled."""
    folder = tmp_path_factory.mktemp("lora2") / "lora2"
    shutil.copytree(adapters["lora"], folder)
    weights = folder / "adapter_model.safetensors"
    tensors = {k: v * 3 if "lora_B" in k else v for k, v in load_file(weights).items()}
    save_file(tensors, weights)
    return folder


@pytest.mark.slow
def test_two_adapters_share_one_base_and_answer_by_name(tiny_model, adapters, second_lora):
    fast = DecodeOptions(max_new_tokens=6, num_workers=0)
    running = Running(
        config(
            tiny_model,
            served_model_name=None,
            adapter=[f"first={adapters['lora']}", f"second={second_lora}"],
            decode=fast,
        )
    )
    try:
        running.wait_ready()
        client = running.client()
        assert [m.id for m in client.models.list().data] == ["first", "second"]

        def served(name: str) -> str:
            with CLIPS[0].open("rb") as audio:
                return client.audio.transcriptions.create(model=name, file=audio).text

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            texts = list(pool.map(served, ["first", "second", "first", "second"]))
        for name, folder in (("first", adapters["lora"]), ("second", second_lora)):
            alone = transcribe(
                TranscribeConfig(
                    inputs=[CLIPS[0]],
                    model=str(tiny_model),
                    adapter=folder,
                    quantization="none",
                    decode=fast,
                )
            ).rows[0]["text"]
            assert texts[0 if name == "first" else 1] == texts[2 if name == "first" else 3]
            assert texts[0 if name == "first" else 1] == alone
        assert texts[0] != texts[1]
    finally:
        running.stop()


def test_adapters_that_cannot_share_a_base_are_refused_at_start(tiny_model, tiny_qwen, adapters):
    def build(**changes):
        return build_server(ServeConfig(**{"quantization": "none", **changes}))

    with pytest.raises(ConfigError, match="serve it alone"):
        build(adapter=[f"a={adapters['lora']}", f"b={adapters['full']}"])
    with pytest.raises(ConfigError, match="would be served as 'lora'"):
        ServeConfig(adapter=[str(adapters["lora"]), str(adapters["lora"])])
    with pytest.raises(ConfigError, match="folder not found"):
        ServeConfig(adapter=["x=/nonexistent/adapter"])
    with pytest.raises(Exception, match="adapter"):  # a Voxtral adapter on a Qwen3-ASR base
        build(model=str(tiny_qwen), adapter=[f"a={adapters['lora']}"])


# ----------------------------------------------------------------------------- queue


def test_the_queue_never_exceeds_its_limit_and_retry_after_follows_the_pace(tiny_model):
    transcriber = Transcriber.load(str(tiny_model), quantization="none")
    engine = BatchingEngine(
        transcriber,
        DecodeOptions(max_new_tokens=200, min_new_tokens=200, num_workers=0),
        max_batch=1,
        max_wait_ms=0,
        max_queue=3,
    )
    try:
        first = Job(AudioItem("busy", str(CLIPS[0]), 5.0), (), 0.0)
        engine.submit(first)
        time.sleep(0.5)  # the worker is decoding `first`
        accepted, refused, depths = [], [], []
        start = threading.Barrier(12)

        def submit(index: int) -> None:
            start.wait()
            try:
                accepted.append(
                    engine.submit(Job(AudioItem(str(index), str(CLIPS[1]), 5.0), (), 0.0))
                )
            except QueueFull:
                refused.append(index)
            depths.append(engine.depth())

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(accepted) == 3 and len(refused) == 9
        assert max(depths) <= 3
        first.future.result(timeout=120)
        for future in accepted:
            future.result(timeout=120)
        assert engine.depth() == 0
        # paced by what it just measured: 3 waiting at ~N s each, one at a time
        engine._pending = 3
        assert engine.retry_after_s() >= 1
        assert engine.retry_after_s() == max(1, math.ceil(3 * engine._seconds_per_job))
        engine._pending = 0
    finally:
        engine.close()


# ---------------------------------------------------------------------- word times


@pytest.mark.slow
def test_word_timestamps_with_an_aligner(tiny_model, tiny_aligner, tmp_path):
    running = Running(
        config(
            tiny_model,
            aligner=str(tiny_aligner),
            decode=DecodeOptions(max_new_tokens=12, num_workers=0),
        )
    )
    try:
        running.wait_ready()
        client = running.client()
        for path in (CLIPS[0], long_recording(tmp_path)):
            with path.open("rb") as audio:
                verbose = client.audio.transcriptions.create(
                    model="ko-med",
                    file=audio,
                    response_format="verbose_json",
                    timestamp_granularities=["word", "segment"],
                )
            words = verbose.words
            assert words and " ".join(w.word for w in words) == " ".join(verbose.text.split())
            ends = [0.0] + [w.end for w in words]
            assert all(w.start >= ends[i] and w.end >= w.start for i, w in enumerate(words))
            spoken = [s for s in verbose.segments if s.text]
            inside = [any(s.start <= w.start and w.end <= s.end for s in spoken) for w in words]
            assert all(inside) and words[-1].end <= verbose.duration
        # word-timed cues: srt with words asked for parses, one cue per line of words
        status, _, body = post(
            running.url + URL,
            {"model": "ko-med", "response_format": "srt", "timestamp_granularities[]": "word"},
            CLIPS[0],
        )
        assert status == 200 and body.decode().startswith("1\n")
        # words need a format that carries them
        status, error = error_of(
            post(
                running.url + URL,
                {"model": "ko-med", "timestamp_granularities[]": "word"},
                CLIPS[0],
            )
        )
        assert status == 400 and error["param"] == "timestamp_granularities"
    finally:
        running.stop()


# --------------------------------------------------------------------------- redaction


@pytest.mark.slow
def test_a_redacting_server_answers_what_redact_makes_of_the_plain_answer(tiny_model):
    from voxadapt.redact import Redactor

    fast = DecodeOptions(max_new_tokens=24, num_workers=0)
    # biasing forces a spoken phone number into the tiny model's transcript
    fields = {
        "model": "ko-med",
        "bias_weight": "100",
        "hotwords": "010-1234-5678",
        "response_format": "verbose_json",
    }
    answers = {}
    for redact in (False, True):
        running = Running(config(tiny_model, decode=fast, redact=redact))
        try:
            running.wait_ready()
            answers[redact] = json.loads(post(running.url + URL, fields, CLIPS[0])[2])
            streamed = post(
                running.url + URL, {**fields, "response_format": "json", "stream": "true"}, CLIPS[0]
            )[2]
            if redact:
                refused = post(running.url + URL, {**fields, "include[]": "logprobs"}, CLIPS[0])
                assert error_of(refused)[1]["param"] == "include"
        finally:
            running.stop()
    plain, redacted = answers[False], answers[True]
    assert "010-1234-5678" in plain["text"]
    expected, _ = Redactor.load().redact_row({"text": plain["text"], "segments": plain["segments"]})
    assert redacted["text"] == expected["text"] and "1234" not in redacted["text"]
    assert [s["text"] for s in redacted["segments"]] == [s["text"] for s in expected["segments"]]
    assert all(not s["tokens"] for s in redacted["segments"])  # no ids that spell it
    done = [
        json.loads(line[6:]) for line in streamed.decode().splitlines() if line.startswith("data: ")
    ]
    deltas = "".join(e["delta"] for e in done if e["type"] == "transcript.text.delta")
    assert deltas == done[-1]["text"] == redacted["text"]


# -------------------------------------------------------------------------- serve --help


def test_serve_help_lists_only_what_applies_to_serving(capsys):
    """--workers and --batch-size (set by the server itself) and `--language manifest` (a
    request has no manifest) were offered; --max-batch is the one batch option."""
    from voxadapt.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for inapplicable in ("--workers", "--batch-size", "manifest"):
        assert inapplicable not in out, inapplicable
    for option in ("--max-batch", "--header-timeout-s", "--body-timeout-s", "--language"):
        assert option in out, option
    assert "the decoding batch" in out

    assert main(["serve", "--language", "manifest"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("voxadapt: error: ") and "manifest" in lines[0]
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--workers", "2"])
    assert exited.value.code == 2 and "--workers" in capsys.readouterr().err


def test_a_yaml_decode_section_cannot_set_what_the_server_sets(tmp_path):
    """A `decode:` section written for transcribe (batch_size, num_workers) is refused by
    name instead of being silently overridden by --max-batch."""
    from voxadapt.config import build_config

    yaml_file = tmp_path / "serve.yaml"
    yaml_file.write_text("decode:\n  batch_size: 4\n  num_workers: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        build_config(ServeConfig, yaml_file)
    assert "batch_size" in str(refused.value) and "num_workers" in str(refused.value)
    assert build_config(ServeConfig, None, max_batch=4).max_batch == 4
