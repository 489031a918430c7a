"""The tiny Qwen3-ASR loads and behaves like a hub checkpoint; the recorded facts hold together."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModelForMultimodalLM,
    AutoProcessor,
    AutoTokenizer,
    Qwen3ASRConfig,
    Qwen3ASRForConditionalGeneration,
    Qwen3ASRForTokenClassification,
    Qwen3ASRProcessor,
)
from transformers.models.qwen3_asr.processing_qwen3_asr import (
    FORCED_ALIGNER_LANGUAGES,
    LANGUAGE_CODE_TO_NAME,
)

from voxadapt.families import qwen3_asr_checkpoint as q
from voxadapt.manifest import current_umask

CLIP = Path(__file__).parents[1] / "src" / "voxadapt" / "samples" / "clips" / "ko_001.wav"
SILENCE = np.zeros(16000, np.float32)
AUDIO_SPAN = "<|audio_start|><|audio_pad|><|audio_end|>"
EMPTY_SYSTEM = "<|im_start|>system\n<|im_end|>\n"
USER = f"<|im_start|>user\n{AUDIO_SPAN}<|im_end|>\n"
ASSISTANT = "<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return q.build_tiny_qwen3_asr(tmp_path_factory.mktemp("tiny-qwen3-asr") / "model")


@pytest.fixture(scope="module")
def processor(tiny: Path) -> Qwen3ASRProcessor:
    return AutoProcessor.from_pretrained(tiny)


@pytest.fixture(scope="module")
def model(tiny: Path) -> Qwen3ASRForConditionalGeneration:
    return Qwen3ASRForConditionalGeneration.from_pretrained(tiny).eval()


def one_second_of_clip() -> np.ndarray:
    audio, rate = sf.read(CLIP, dtype="float32")
    assert rate == 16000
    return audio[:rate]


def test_loads_with_auto_and_qwen3_asr_classes(tiny: Path, processor, model) -> None:
    config = AutoConfig.from_pretrained(tiny)
    assert config.model_type == q.MODEL_TYPE
    assert config.architectures == [q.ASR_ARCHITECTURE]
    assert isinstance(config, Qwen3ASRConfig)
    assert isinstance(processor, Qwen3ASRProcessor)
    assert isinstance(Qwen3ASRProcessor.from_pretrained(tiny), Qwen3ASRProcessor)
    assert type(AutoTokenizer.from_pretrained(tiny)).__name__ == "Qwen2Tokenizer"
    assert isinstance(AutoModelForMultimodalLM.from_pretrained(tiny), type(model))
    assert model.generation_config.eos_token_id == [151643, 151645]
    assert model.generation_config.pad_token_id == 151645
    # Tied like the released checkpoints: the LM head is the embedding.
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight


def test_special_tokens_resolve_to_their_real_ids(processor, model) -> None:
    tokenizer = processor.tokenizer
    for token_id, token in q.SPECIAL_TOKENS.items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id, token
    assert len(tokenizer) == max(q.SPECIAL_TOKENS) + 1
    assert processor.audio_token_id == model.config.audio_token_id == q.AUDIO_TOKEN_ID == 151676
    assert (processor.audio_bos_token_id, processor.audio_eos_token_id) == (151669, 151670)
    assert tokenizer.convert_tokens_to_ids(q.TIMESTAMP_TOKEN) == model.config.timestamp_token_id
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert model.config.text_config.vocab_size == q.VOCAB_SIZE > max(q.SPECIAL_TOKENS)
    # `<asr_text>` is not special, so decoding without special tokens keeps the marker.
    assert tokenizer.decode([151645, 151704], skip_special_tokens=True) == "<asr_text>"


def test_korean_round_trips_through_the_tokenizer(processor) -> None:
    tokenizer = processor.tokenizer
    for text in ("혈압은 130에 85입니다", "환자분, 오늘 아침에 혈압약은 드셨어요?", "뷁 ㅋㅋ 😀"):
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text
        assert max(ids) < q.BASE_VOCAB_SIZE  # byte-level: no unknown or added tokens


def test_transcription_request_on_a_real_clip_generates(processor, model) -> None:
    inputs = processor.apply_transcription_request(audio=one_second_of_clip(), language="ko")
    n_frames = inputs["input_features_mask"].sum(-1)
    expected = int(processor._get_audio_token_length(n_frames)[0])
    assert expected == 13  # 100 mel frames, one chunk of the real n_window=50
    assert int((inputs["input_ids"] == q.AUDIO_TOKEN_ID).sum()) == expected
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5)
    prompt_length = inputs["input_ids"].shape[1]
    assert out.shape[0] == 1 and prompt_length < out.shape[1] <= prompt_length + 5


def test_forced_language_prefills_the_answer(processor) -> None:
    (prompt,) = processor.apply_transcription_request(audio=SILENCE, language="ko", tokenize=False)
    assert prompt == f"{EMPTY_SYSTEM}{USER}{ASSISTANT}language Korean<asr_text>"
    ids = processor.apply_transcription_request(audio=SILENCE, language="ko")["input_ids"][0]
    assert processor.tokenizer.decode(ids).endswith(
        "<|im_start|>assistant\nlanguage Korean<asr_text>"
    )


def test_without_language_the_prompt_ends_at_the_assistant_header(processor) -> None:
    (prompt,) = processor.apply_transcription_request(audio=SILENCE, language=None, tokenize=False)
    assert prompt == f"{EMPTY_SYSTEM}{USER}{ASSISTANT}"
    # The same as the plain chat template with a generation prompt ([TF]'s processor test).
    messages = [{"role": "user", "content": [{"type": "audio", "audio": SILENCE}]}]
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == prompt


def test_context_prompt_goes_into_the_system_turn(processor) -> None:
    (prompt,) = processor.apply_transcription_request(
        audio=SILENCE, prompt="고혈압 당뇨", language="ko", tokenize=False
    )
    assert prompt == (
        f"<|im_start|>system\n고혈압 당뇨<|im_end|>\n{USER}{ASSISTANT}language Korean<asr_text>"
    )


def test_assistant_mask_covers_the_answer_only(processor) -> None:
    answer = "language Korean<asr_text>혈압은 130에 85입니다"
    messages = [
        {"role": "user", "content": [{"type": "audio", "audio": SILENCE}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]
    out = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    mask = torch.as_tensor(out["assistant_masks"][0]).bool()
    assert processor.tokenizer.decode(out["input_ids"][0][mask]) == f"{answer}<|im_end|>\n"


def test_languages_are_the_ones_transformers_can_force() -> None:
    assert set(q.LANGUAGES) == set(LANGUAGE_CODE_TO_NAME)
    assert len(q.LANGUAGES) == 30
    names = {LANGUAGE_CODE_TO_NAME[code] for code in q.ALIGNER_LANGUAGES}
    assert names == set(FORCED_ALIGNER_LANGUAGES)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# Published sizes: the decoders are Qwen3-0.6B / Qwen3-1.7B; a distilled derivative's card
# gives 938M for the 0.6B checkpoint counting the LM head apart from the tied embedding.
@pytest.mark.parametrize(
    ("hub_id", "low", "high"), [(q.HUB_ID_0_6B, 0.7e9, 0.85e9), (q.HUB_ID_1_7B, 1.9e9, 2.2e9)]
)
def test_real_configs_build_models_of_the_published_size(hub_id: str, low, high) -> None:
    config = q.real_config(hub_id)
    assert config.architectures == [q.ASR_ARCHITECTURE]
    assert config.audio_config.output_dim == config.text_config.hidden_size
    with torch.device("meta"):
        model = Qwen3ASRForConditionalGeneration(config)
    parts = {
        "model.audio_tower": model.model.audio_tower,
        "model.multi_modal_projector": model.model.multi_modal_projector,
        "model.language_model": model.model.language_model,
    }
    top = sorted({name for name, _ in model.named_modules() if name and name.count(".") <= 1})
    print(hub_id, "modules:", top)
    counts = {name: count(part) for name, part in parts.items()}
    print(hub_id, "total", count(model), counts, "lm_head", model.lm_head.weight.numel())
    assert set(parts) | {"model", "lm_head"} == set(top)
    assert low < count(model) < high
    assert sum(counts.values()) == count(model)  # the LM head is tied, not extra
    # With the head counted apart, as the safetensors files store it.
    if hub_id == q.HUB_ID_0_6B:
        assert round((count(model) + model.lm_head.weight.numel()) / 1e6) == 938
    assert q.real_config(q.ORIGINAL_HUB_IDS[hub_id]).to_dict() == config.to_dict()


def test_aligner_config_builds_the_token_classifier() -> None:
    config = q.real_config(q.ALIGNER_HUB_ID)
    assert config.model_type == q.MODEL_TYPE
    assert config.architectures == [q.ALIGNER_ARCHITECTURE]
    with torch.device("meta"):
        aligner = Qwen3ASRForTokenClassification(config)
    assert aligner.score.out_features == 5000
    assert 0.85e9 < count(aligner) < 0.95e9


def test_tiny_config_keeps_the_real_structure() -> None:
    tiny, real = q.tiny_config(), q.real_config(q.HUB_ID_0_6B)
    for field in ("audio_token_id", "timestamp_token_id", "pad_token_id", "eos_token_id"):
        assert getattr(tiny, field) == getattr(real, field)
    for field in ("n_window", "n_window_infer", "num_mel_bins", "max_position_embeddings"):
        assert getattr(tiny.audio_config, field) == getattr(real.audio_config, field)
    assert tiny.text_config.vocab_size == real.text_config.vocab_size
    assert tiny.text_config.tie_word_embeddings and real.text_config.tie_word_embeddings
    assert tiny.audio_config.output_dim == tiny.text_config.hidden_size


def test_same_seed_gives_the_same_weights(tiny: Path, tmp_path: Path) -> None:
    again = q.build_tiny_qwen3_asr(tmp_path / "again")
    first, second = load_file(tiny / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json"):
        assert (tiny / name).read_bytes() == (again / name).read_bytes(), name
    other = load_file(q.build_tiny_qwen3_asr(tmp_path / "other", seed=1) / "model.safetensors")
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_files_honour_the_umask(tiny: Path) -> None:
    mask = current_umask()
    assert all((f.stat().st_mode & 0o777) == (0o666 & ~mask) for f in tiny.iterdir())
