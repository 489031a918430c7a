"""Qwen3-ASR through the family interface: features, prompts and targets equal the processor's,
and the tiny model goes cache -> train -> resume -> transcribe -> evaluate -> export -> serve."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from voxadapt.decoding import DecodeOptions
from voxadapt.errors import ConfigError, ModelError, VoxadaptError
from voxadapt.families import QWEN3_ASR, VOXTRAL, family_of, load_frontend
from voxadapt.features import MASKED, FeatureStore, audio_inputs, compute_features
from voxadapt.manifest import read_manifest
from voxadapt.stages.cache import CacheConfig, build_cache
from voxadapt.stages.evaluate import EvaluateConfig, evaluate
from voxadapt.stages.export import ExportConfig, export
from voxadapt.stages.train import TrainConfig, train
from voxadapt.stages.transcribe import TranscribeConfig, transcribe

from conftest import CLIPS, fit_duration

FAST = DecodeOptions(max_new_tokens=6, num_workers=0, batch_size=4)


@pytest.fixture(scope="module")
def frontend(tiny_qwen):
    return load_frontend(tiny_qwen)


def clip(seconds: float, index: int = 0) -> np.ndarray:
    samples, rate = sf.read(CLIPS[index], dtype="float32")
    return fit_duration(samples, rate, seconds)


def reference(frontend, audio, **options):
    return frontend.processor.apply_transcription_request(
        audio=audio, processor_kwargs={"sampling_rate": 16000}, **options
    )


# 0.3 s is padded to the 0.5 s minimum without a mask (as the processor does); 45 s spans
# more than one attention window (n_window_infer = 800 frames)
@pytest.mark.parametrize("seconds", [0.3, 0.5, 3.7, 12.0, 45.0])
def test_features_and_mask_equal_the_processor(frontend, seconds):
    audio = clip(seconds)
    ours = audio_inputs([compute_features(audio, frontend.spec)], frontend.spec)
    expected = reference(frontend, audio, language="ko")
    assert frontend.spec.layout == MASKED
    assert ours["input_features"].shape == expected["input_features"].shape
    torch.testing.assert_close(
        ours["input_features"], expected["input_features"], atol=1e-5, rtol=0
    )
    assert torch.equal(ours["input_features_mask"], expected["input_features_mask"].long())


def test_a_batch_holds_each_clip_as_the_processor_does_alone(frontend):
    clips = [clip(2.0, 0), clip(7.3, 1), clip(0.4, 2)]
    features = [compute_features(audio, frontend.spec) for audio in clips]
    batch = audio_inputs(features, frontend.spec)
    for row, audio in enumerate(clips):
        alone = reference(frontend, audio, language="ko")
        width = alone["input_features"].shape[-1]
        torch.testing.assert_close(
            batch["input_features"][row, :, :width], alone["input_features"][0], atol=1e-5, rtol=0
        )
        assert not batch["input_features"][row, :, width:].any()  # zeros, masked
        assert torch.equal(
            batch["input_features_mask"][row, :width], alone["input_features_mask"][0]
        )
        assert not batch["input_features_mask"][row, width:].any()


@pytest.mark.parametrize(
    "options",
    [
        {"language": "ko"},
        {"language": "en"},
        {"language": None},
        {"language": None, "prompt": "고혈압 당뇨"},
    ],
)
@pytest.mark.parametrize("seconds", [0.3, 4.0, 31.0])
def test_prompt_equals_apply_transcription_request(frontend, options, seconds):
    audio = clip(seconds)
    features = compute_features(audio, frontend.spec)
    expected = reference(frontend, audio, **options)["input_ids"][0].tolist()
    ours = frontend.prompts.prompt_for(features, options["language"], options.get("prompt"))
    assert ours == expected
    assert ours.count(frontend.prompts.audio_token_id) == expected.count(
        frontend.processor.audio_token_id
    )


@pytest.mark.parametrize("language", ["ko", None])
def test_target_is_token_exact_and_only_transcript_and_end_are_learned(frontend, language):
    """The prompt + target equal the chat template's tokens of the whole conversation, and
    the target is exactly the assistant's part the template marks (its trailing newline
    aside): never the system/user headers the processor's own `output_labels` would train."""
    text = "혈압은 130에 85이고 메트포르민 500mg 드세요"
    features = compute_features(clip(3.0), frontend.spec)
    prompt = frontend.prompts.prompt_for(features, language)
    target = frontend.prompts.target(text, None if language else "ko")
    silence = np.zeros(features.n_frames * 160, dtype=np.float32)
    answer = f"language Korean<asr_text>{text}"
    conversation = [
        {"role": "system", "content": [{"type": "text", "text": ""}]},
        {"role": "user", "content": [{"type": "audio", "audio": silence}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]
    full = frontend.processor.apply_chat_template(
        [conversation],
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        processor_kwargs={"sampling_rate": 16000},
    )
    ids = full["input_ids"][0].tolist()
    assert ids[: len(prompt) + len(target)] == prompt + target
    tokenizer = frontend.processor.tokenizer
    assert tokenizer.decode(ids[len(prompt) + len(target) :]) == "\n"
    learned = [i for i, m in zip(ids, list(full["assistant_masks"][0])) if m]
    assert target == learned[-len(target) - 1 : -1]
    assert target[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    # a pad-based label mask would hide this end token: the released config pads with it
    assert target[-1] in frontend.prompts.stop_ids


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        ("혈압이 높아요", ("혈압이 높아요", None)),
        ("language Korean<asr_text>혈압이 높아요", ("혈압이 높아요", "ko")),
        ("language English<asr_text>blood pressure", ("blood pressure", "en")),
        ("language None<asr_text>", ("", None)),
        ("<asr_text>혈압", ("혈압", None)),
    ],
)
def test_detected_language_is_parsed_and_no_markup_leaks(frontend, generated, expected):
    ids = frontend.processor.tokenizer.encode(generated, add_special_tokens=False)
    assert frontend.prompts.transcript(ids) == expected


def test_a_context_is_refused_for_voxtral_and_a_language_qwen_cannot_name(
    tiny_model, tiny_qwen, tmp_path
):
    with pytest.raises(ConfigError, match=r"--context: Voxtral has no context prompt"):
        transcribe(
            TranscribeConfig(
                inputs=[CLIPS[0]],
                model=str(tiny_model),
                out=tmp_path / "v",
                decode=DecodeOptions(context="내과 외래", num_workers=0),
            )
        )
    with pytest.raises(ConfigError, match="Qwen3-ASR cannot be told to transcribe 'sw'"):
        transcribe(
            TranscribeConfig(
                inputs=[CLIPS[0]],
                model=str(tiny_qwen),
                out=tmp_path / "q",
                decode=DecodeOptions(language="sw", num_workers=0),
            )
        )
    assert not (tmp_path / "v").exists() and not (tmp_path / "q").exists()


def run_config(tiny_qwen, manifest, out, **changes):
    base = dict(
        model=str(tiny_qwen),
        train=manifest,
        valid=manifest,
        output_dir=out,
        max_steps=6,
        batch_size=2,
        grad_accum=1,
        lr=1e-2,
        logging_steps=1,
        eval_steps=3,
        warmup_ratio=0.0,
        num_workers=0,
        scheduler="constant",
        decode=DecodeOptions(max_new_tokens=4, num_workers=0),
    )
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def trained(tiny_qwen, sample_manifest, tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen-run")
    cache = build_cache(CacheConfig([sample_manifest], str(tiny_qwen), root / "cache", jobs=1))
    result = train(run_config(tiny_qwen, sample_manifest, root / "run", cache=root / "cache"))
    return {"root": root, "cache": cache, "result": result}


@pytest.mark.slow
def test_cache_holds_the_processor_features(trained, tiny_qwen, sample_manifest, frontend):
    from voxadapt.features import utterance_key

    store = FeatureStore(trained["root"] / "cache", frontend.spec)
    spec_file = json.loads((trained["root"] / "cache" / "feature_spec.json").read_text())
    assert spec_file["layout"] == MASKED
    for utterance in read_manifest(sample_manifest):
        cached = store.get(utterance_key(utterance, frontend.spec))
        audio, _ = sf.read(utterance.audio, dtype="float32")
        expected = reference(frontend, audio, language="ko")
        got = audio_inputs([cached], frontend.spec)
        torch.testing.assert_close(
            got["input_features"], expected["input_features"], atol=1e-3, rtol=0
        )
        assert torch.equal(got["input_features_mask"], expected["input_features_mask"].long())


@pytest.mark.slow
def test_training_lowers_the_loss_and_trains_only_the_projector(trained, tiny_qwen):
    result = trained["result"]
    losses = [r["loss"] for r in result.state.log_history if "loss" in r]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.05
    weights = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert weights and all(".multi_modal_projector." in name for name in weights)
    info = json.loads((result.adapter_dir / "voxadapt_adapter.json").read_text())
    assert info["family"] == "qwen3_asr" and info["base_model"] == str(tiny_qwen)


@pytest.mark.slow
def test_llm_lora_targets_resolve_inside_the_llm_only(tiny_qwen, sample_manifest, tmp_path):
    """q_proj exists in both Qwen3-ASR's encoder and its LLM: LoRA on the LLM must not
    reach the encoder."""
    result = train(
        run_config(
            tiny_qwen, sample_manifest, tmp_path / "run", max_steps=2, valid=None,
            train_modules=["projector", "llm"],
        )
    )  # fmt: skip
    names = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert any(".language_model." in n and "q_proj" in n for n in names)
    assert not any(".audio_tower." in n for n in names)


@pytest.mark.slow
def test_resume_is_bit_identical(tiny_qwen, sample_manifest, tmp_path):
    straight = train(
        run_config(tiny_qwen, sample_manifest, tmp_path / "straight", max_steps=4, valid=None)
    )
    train(run_config(tiny_qwen, sample_manifest, tmp_path / "split", max_steps=2, valid=None))
    resumed = train(
        run_config(
            tiny_qwen, sample_manifest, tmp_path / "split", max_steps=4, valid=None, resume=True
        )
    )
    a = load_file(straight.adapter_dir / "adapter_model.safetensors")
    b = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.slow
def test_transcribe_and_evaluate_with_the_adapter(trained, sample_manifest, tmp_path):
    adapter = trained["result"].adapter_dir
    out = tmp_path / "eval"
    result = evaluate(
        EvaluateConfig(
            manifest=sample_manifest, adapter=adapter, out_dir=out, decode=FAST, bootstrap=0
        )
    )
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == len(read_manifest(sample_manifest)) == result.decoded
    assert all("<asr_text>" not in r["hypothesis"] and "<|" not in r["hypothesis"] for r in rows)
    again = evaluate(
        EvaluateConfig(
            manifest=sample_manifest, adapter=adapter, out_dir=out, decode=FAST, bootstrap=0,
            resume=True,
        )
    )  # fmt: skip
    assert again.decoded == 0 and again.metrics["cer"] == result.metrics["cer"]
    transcribed = transcribe(
        TranscribeConfig(inputs=[CLIPS[0]], adapter=adapter, out=tmp_path / "t.jsonl", decode=FAST)
    )
    assert transcribed.n_errors == 0 and len(transcribed.rows) == 1
    assert "<asr_text>" not in transcribed.rows[0]["text"]


@pytest.mark.slow
def test_export_reloads_in_plain_transformers_with_matching_logits(trained, tiny_qwen, tmp_path):
    from transformers import AutoProcessor, Qwen3ASRForConditionalGeneration

    from voxadapt.adapters import load_for_inference

    adapter = trained["result"].adapter_dir
    with pytest.raises(ConfigError, match=r"Qwen3-ASR model, which --format mistral cannot hold"):
        export(ExportConfig(adapter, tmp_path / "m", str(tiny_qwen), format="mistral"))
    assert not (tmp_path / "m").exists()
    result = export(ExportConfig(adapter, tmp_path / "hf", str(tiny_qwen), dtype="fp32"))
    merged = Qwen3ASRForConditionalGeneration.from_pretrained(result.out_dir).eval()
    processor = AutoProcessor.from_pretrained(result.out_dir)
    unmerged, _ = load_for_inference(tiny_qwen, adapter, quantization="none")
    base, _ = load_for_inference(tiny_qwen, quantization="none")
    inputs = processor.apply_transcription_request(
        audio=clip(2.0), language="ko", processor_kwargs={"sampling_rate": 16000}
    )

    def logits(model):
        with torch.no_grad():
            return model(**inputs).logits.float()

    expected = logits(unmerged)
    assert float((logits(merged) - expected).norm() / expected.norm()) < 1e-3
    assert float((logits(base) - expected).norm() / expected.norm()) > 1e-3  # the adapter matters


@pytest.mark.slow
def test_an_adapter_of_one_family_is_refused_on_the_other(
    trained, tiny_model, sample_manifest, tmp_path
):
    adapter = trained["result"].adapter_dir
    with pytest.raises(ModelError, match=r"is a qwen3_asr adapter, and .* is a voxtral model"):
        evaluate(
            EvaluateConfig(
                manifest=sample_manifest,
                model=str(tiny_model),
                adapter=adapter,
                out_dir=tmp_path / "e",
                decode=FAST,
            )
        )
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_serve_answers_as_transcribe_does(trained, tmp_path):
    pytest.importorskip("openai")
    from test_serve import Running, free_port

    from voxadapt.stages.serve import ServeConfig

    adapter = trained["result"].adapter_dir
    server = Running(
        ServeConfig(adapter=adapter, quantization="none", port=free_port(),
                    served_model_name="ko-qwen", decode=FAST)
    )  # fmt: skip
    try:
        server.wait_ready()
        with CLIPS[0].open("rb") as audio:
            answer = server.client().audio.transcriptions.create(
                model="ko-qwen", file=audio, response_format="verbose_json"
            )
    finally:
        server.stop()
    expected = transcribe(
        TranscribeConfig(inputs=[CLIPS[0]], adapter=adapter, quantization="none", decode=FAST)
    ).rows[0]
    assert answer.text == expected["text"]


def test_the_family_of_each_tiny_model(tiny_model, tiny_qwen):
    assert family_of(tiny_model) is VOXTRAL
    assert family_of(tiny_qwen) is QWEN3_ASR


def lora_parameters(rank, shapes):
    return sum(rank * (fan_in + fan_out) for fan_in, fan_out in shapes)


def expected_trainable(config, parts, mode):
    """Trainable parameters per part, from the configuration's sizes."""
    audio, text = config.audio_config, config.text_config
    h, ff = text.hidden_size, text.intermediate_size
    q, kv = text.num_attention_heads * text.head_dim, text.num_key_value_heads * text.head_dim
    llm_layer = [(h, q), (h, kv), (h, kv), (q, h), (h, ff), (h, ff), (ff, h)]
    d, encoder_ff = audio.d_model, audio.encoder_ffn_dim
    encoder_layer = [(d, d)] * 4 + [(d, encoder_ff), (encoder_ff, d)]
    projector = [(d, d), (d, audio.output_dim)]  # linear_1, then to the LLM's width
    counts = dict.fromkeys(("audio_tower", "projector", "language_model", "lm_head"), 0)
    if "projector" in parts:
        full = sum(fan_in * fan_out + fan_out for fan_in, fan_out in projector)  # with biases
        counts["projector"] = lora_parameters(8, projector) if mode == "lora" else full
    if "llm" in parts:
        counts["language_model"] = lora_parameters(16, llm_layer * text.num_hidden_layers)
    if "encoder" in parts:
        counts["audio_tower"] = lora_parameters(16, encoder_layer * audio.encoder_layers)
    return counts


# what `voxadapt train --train-modules ...` trains on the released Qwen3-ASR (README table)
QWEN_SIZES = {
    ("0.6B", ("projector",), "lora"): 29_696,
    ("0.6B", ("projector",), "full"): 1_722_240,
    ("0.6B", ("projector", "llm"), "lora"): 10_122_240,
    ("0.6B", ("projector", "llm", "encoder"), "lora"): 14_767_104,
    ("0.6B", ("llm",), "lora"): 10_092_544,
    ("1.7B", ("projector",), "lora"): 40_960,
    ("1.7B", ("projector",), "full"): 3_148_800,
    ("1.7B", ("projector", "llm"), "lora"): 17_473_536,
    ("1.7B", ("projector", "llm", "encoder"), "lora"): 24_551_424,
    ("1.7B", ("llm",), "lora"): 17_432_576,
}


@pytest.mark.parametrize(("size", "parts", "mode"), list(QWEN_SIZES))
def test_what_learns_on_the_real_qwen3_asr(size, parts, mode):
    """The audit of each `--train-modules` choice on the released 0.6B and 1.7B
    configurations, on the meta device: trainable parameters per part equal the counts from
    the configuration's sizes (LoRA targets resolved inside each part: q_proj is in both the
    encoder and the LLM), and nothing else trains."""
    from voxadapt.families.qwen3_asr_checkpoint import real_config
    from voxadapt.model import (
        AdapterOptions,
        attach_adapter,
        check_trainable_parts,
        parameter_audit,
    )

    config = real_config(f"Qwen/Qwen3-ASR-{size}-hf")
    model = QWEN3_ASR.meta_model(config)
    with torch.device("meta"):
        model = attach_adapter(model, AdapterOptions(mode, train_modules=parts))
    expected = expected_trainable(config, parts, mode)
    rows = {row.group: row for row in parameter_audit(model)}
    assert {group: row.trainable for group, row in rows.items()} == expected
    assert (
        check_trainable_parts(model, parts)
        == sum(expected.values())
        == QWEN_SIZES[(size, parts, mode)]
    )
    frozen_llm = rows["language_model"].total - rows["language_model"].trainable
    assert (0.55e9 < frozen_llm < 0.65e9) if size == "0.6B" else (1.65e9 < frozen_llm < 1.8e9)


@pytest.mark.slow
def test_a_record_language_qwen_cannot_name_is_one_line_before_decoding(
    tiny_qwen, sample_manifest, tmp_path
):
    from voxadapt.manifest import read_manifest, write_jsonl

    rows = [{**u.to_dict(), "language": "sw"} for u in read_manifest(sample_manifest)]
    manifest = tmp_path / "sw.jsonl"
    write_jsonl(manifest, rows)
    options = DecodeOptions(language="manifest", max_new_tokens=4, num_workers=0)
    with pytest.raises(VoxadaptError, match="Qwen3-ASR cannot be told to transcribe 'sw'"):
        evaluate(
            EvaluateConfig(manifest=manifest, model=str(tiny_qwen), out_dir=tmp_path / "e",
                           decode=options)
        )  # fmt: skip
    assert not (tmp_path / "e" / "predictions.jsonl").exists()
    with pytest.raises(VoxadaptError, match=r"utterance .*: Qwen3-ASR cannot be told"):
        train(run_config(tiny_qwen, manifest, tmp_path / "t", decode=options))


def test_codes_only_qwen_can_force_pass_the_options_and_are_refused_for_voxtral(tiny_model):
    assert DecodeOptions(language="yue").language == "yue"  # Cantonese: not ISO 639-1
    assert DecodeOptions(language="yue").family_problems(QWEN3_ASR) == []
    assert "not an ISO 639-1 code" in DecodeOptions(language="yue").family_problems(VOXTRAL)[0]
    with pytest.raises(ConfigError, match="not an ISO 639-1 code"):
        DecodeOptions(language="xx")


@pytest.mark.slow
def test_serve_answers_400_for_a_language_qwen_cannot_name(trained):
    pytest.importorskip("openai")
    from test_serve import Running, free_port, post

    from voxadapt.stages.serve import ServeConfig

    server = Running(
        ServeConfig(adapter=trained["result"].adapter_dir, quantization="none", port=free_port(),
                    served_model_name="q", decode=FAST)
    )  # fmt: skip
    try:
        server.wait_ready()
        status, _, body = post(
            f"{server.url}/v1/audio/transcriptions", {"model": "q", "language": "sw"}, CLIPS[0]
        )
        ok, _, _ = post(f"{server.url}/v1/audio/transcriptions", {"model": "q"}, CLIPS[0])
    finally:
        server.stop()
    assert status == 400 and b"cannot be told to transcribe 'sw'" in body
    assert ok == 200


@pytest.mark.slow
def test_long_form_term_biasing_and_context_with_qwen(tiny_qwen, tmp_path):
    """A recording past the long-form threshold is split at pauses and its segments decoded
    in batches; term biasing (our shallow fusion) and the family's context prompt run in the
    same pass; the transcript never holds the chat markup."""
    parts = []
    for clip_path in CLIPS * 3:
        samples, rate = sf.read(clip_path, dtype="float32")
        parts += [np.zeros(int(1.5 * rate), dtype=np.float32), samples]
    long = tmp_path / "consult.wav"
    sf.write(long, np.concatenate([*parts, np.zeros(16000, dtype=np.float32)]), 16000)
    terms = tmp_path / "terms.txt"
    terms.write_text("고혈압\nCT|씨티\n", encoding="utf-8")
    options = DecodeOptions(
        max_new_tokens=4, num_workers=0, bias_terms=terms, bias_weight=5.0,
        context="내과 외래 진료: 고혈압", long_form_threshold_s=10.0,
    )  # fmt: skip
    row = transcribe(
        TranscribeConfig(inputs=[long], model=str(tiny_qwen), quantization="none", decode=options)
    ).rows[0]
    assert len(row["segments"]) >= 6
    assert all(a["end"] <= b["start"] for a, b in zip(row["segments"], row["segments"][1:]))
    assert "<asr_text>" not in row["text"] and "<|" not in row["text"]


def test_left_padded_prompts_of_different_lengths_give_each_clip_its_own_logits(
    tiny_qwen, frontend
):
    """Qwen3-ASR's prompts follow each clip's length, so a decoding batch left-pads them
    under the attention mask: every row must score as that clip alone."""
    from voxadapt.adapters import load_for_inference

    model, _ = load_for_inference(tiny_qwen, quantization="none", device="cpu")
    features = [compute_features(clip(seconds, i), frontend.spec) for i, seconds in
                enumerate((1.0, 2.5, 4.0))]  # fmt: skip
    prompts = [frontend.prompts.prompt_for(f, "ko") for f in features]
    assert len({len(p) for p in prompts}) == 3

    def last_logits(batch_features, batch_prompts):
        width = max(map(len, batch_prompts))
        ids = torch.full((len(batch_prompts), width), frontend.prompts.pad_id)
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(batch_prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        with torch.no_grad():
            inputs = audio_inputs(batch_features, frontend.spec)
            return model(input_ids=ids, attention_mask=mask, **inputs).logits[:, -1]

    batched = last_logits(features, prompts)
    for row, (one, prompt) in enumerate(zip(features, prompts)):
        torch.testing.assert_close(batched[row], last_logits([one], [prompt])[0], atol=1e-5, rtol=0)
