"""What a Qwen3-ASR hub checkpoint holds, as transformers 5.25 loads it, and a tiny random one.

Qwen3-ASR (Qwen3ASRForConditionalGeneration, model_type `qwen3_asr`) is a Whisper-style audio
encoder (three stride-2 convolutions, then windowed attention), a two-layer projector and a
Qwen3 decoder. This module writes down the facts a faithful stand-in needs (special-token ids,
the processor's chat template, the released configs and generation settings) with where each
came from, and builds a random tiny model that loads exactly like a hub checkpoint: the real
classes, the real token ids and prompt layout, toy widths (~10M parameters, most of them the
151936-row embedding).

Hub ids: transformers 5.25 loads the converted `-hf` repositories natively (its docstrings and
model doc name `Qwen/Qwen3-ASR-1.7B-hf`, `Qwen/Qwen3-ASR-0.6B-hf`,
`Qwen/Qwen3-ForcedAligner-0.6B-hf`). The original `Qwen/Qwen3-ASR-1.7B` / `-0.6B` repos nest
their widths under `thinker_config` and prefix weights with `thinker.`; 5.25 has no conversion
mapping for them, so `Qwen3ASRConfig` silently ignores `thinker_config` and falls back to default
widths. Convert those with transformers' `convert_qwen3_asr_to_hf.py` first.

Sources (read, not copied):
  [TF]   transformers 5.25, src/transformers/models/qwen3_asr/ (configuration, processing,
         modeling) as installed, and upstream convert_qwen3_asr_to_hf.py,
         docs/source/en/model_doc/qwen3_asr.md, tests/models/qwen3_asr/test_processor_qwen3_asr.py
  [ORIG] github.com/QwenLM/Qwen3-ASR, qwen_asr/inference/qwen3_asr.py (prompt building,
         max_new_tokens=512), qwen_asr/core/transformers_backend/configuration_qwen3_asr.py
  [PORT] independent ports that read the hub files: antirez/qwen-asr (qwen_asr.h, MODEL.md),
         ivan-digital/qwen3-asr-swift (docs/asr-model.md), several Rust/Go/Python ports' tests
         quoting tokenizer_config.json's added_tokens_decoder and config.json
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import Qwen3ASRConfig

MODEL_TYPE = "qwen3_asr"
ASR_ARCHITECTURE = "Qwen3ASRForConditionalGeneration"
# [TF] the forced aligner is the same model (same model_type, same encoder and decoder classes)
# with a token-classification head (`score`, num_labels=5000 timestamp classes of 80 ms) in
# place of lm_head. Its original config names the ASR architecture and marks itself with
# thinker_config.model_type="qwen3_forced_aligner" and classify_num=5000 ([PORT], vLLM #35367).
ALIGNER_ARCHITECTURE = "Qwen3ASRForTokenClassification"

HUB_ID_0_6B = "Qwen/Qwen3-ASR-0.6B-hf"
HUB_ID_1_7B = "Qwen/Qwen3-ASR-1.7B-hf"
ALIGNER_HUB_ID = "Qwen/Qwen3-ForcedAligner-0.6B-hf"
# The original releases, which 5.25 does not read natively (see the module docstring).
ORIGINAL_HUB_IDS = {
    HUB_ID_0_6B: "Qwen/Qwen3-ASR-0.6B",
    HUB_ID_1_7B: "Qwen/Qwen3-ASR-1.7B",
    ALIGNER_HUB_ID: "Qwen/Qwen3-ForcedAligner-0.6B",
}

# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------

# Rows of the embedding and LM head ([PORT] config.json text_config.vocab_size, all ports agree);
# the tokenizer itself ends at id 151704 (ASR) or 151705 (aligner), the rest is padding rows.
VOCAB_SIZE = 151936
# Byte-level BPE entries before the first added token (Qwen2/Qwen3 vocab.json, ids 0..151642).
BASE_VOCAB_SIZE = 151643

# The added tokens with confirmed names and ids.
#  - 151643..151668: the Qwen3 base tokenizer's added tokens (Qwen2.5/Qwen3 tokenizer_config.json);
#    Qwen3-ASR's tokenizer is Qwen3's with audio tokens added ([PORT]: a Rust port's test
#    encodes `<tool_call>` to 151657 with the Qwen3-ASR tokenizer).
#  - 151669, 151670, 151676, 151704: [PORT] (antirez/qwen-asr qwen_asr.h; Go/Rust/Python ports
#    asserting tokenizer_config.json) and [TF] (Qwen3ASRConfig.audio_token_id=151676).
#  - 151705 `<timestamp>`: [TF] Qwen3ASRConfig.timestamp_token_id and the forced-aligner chat
#    template (words joined by `<timestamp><timestamp>`). A Rust port notes it exists only in the
#    ForcedAligner's tokenizer ("the ASR download ends at <asr_text>=151704"), as does a
#    derivative's model card ("full 151 705 vocab"). It is kept here (and in the tiny
#    tokenizer) so `timestamp_token_id` resolves; the real ASR tokenizer lacks it.
SPECIAL_TOKENS: dict[int, str] = {
    151643: "<|endoftext|>",
    151644: "<|im_start|>",
    151645: "<|im_end|>",
    151646: "<|object_ref_start|>",
    151647: "<|object_ref_end|>",
    151648: "<|box_start|>",
    151649: "<|box_end|>",
    151650: "<|quad_start|>",
    151651: "<|quad_end|>",
    151652: "<|vision_start|>",
    151653: "<|vision_end|>",
    151654: "<|vision_pad|>",
    151655: "<|image_pad|>",
    151656: "<|video_pad|>",
    151657: "<tool_call>",
    151658: "</tool_call>",
    151659: "<|fim_prefix|>",
    151660: "<|fim_middle|>",
    151661: "<|fim_suffix|>",
    151662: "<|fim_pad|>",
    151663: "<|repo_name|>",
    151664: "<|file_sep|>",
    151665: "<tool_response>",
    151666: "</tool_response>",
    151667: "<think>",
    151668: "</think>",
    151669: "<|audio_start|>",
    151670: "<|audio_end|>",
    151676: "<|audio_pad|>",
    151704: "<asr_text>",
    151705: "<timestamp>",
}
# Ids in 151669..151704 whose token text no source shows. Qwen3-Omni and Qwen3-TTS (same
# family) hold <tts_pad>, <tts_text_bos>, <tts_text_eod>, <tts_text_bos_single> at
# 151671..151674 and <|audio_pad|> at 151675, but Qwen3-ASR moved <|audio_pad|> to 151676, so
# that layout cannot be assumed. The tiny tokenizer fills them with placeholders named
# `<|unconfirmed_ID|>` only so that the confirmed tokens land on their real ids.
UNCONFIRMED_IDS: tuple[int, ...] = tuple(
    i for i in range(151669, 151705) if i not in SPECIAL_TOKENS
)
# Added tokens with "special": false, so that decode(skip_special_tokens=True) keeps them:
# Qwen3's tool/fim/think tokens (Qwen3 tokenizer_config.json), and `<asr_text>`, which
# [PORT] tests read as non-special and which transformers' `decode(return_format="parsed")`
# relies on: it decodes with skip_special_tokens=True and then splits on `<asr_text>`.
NON_SPECIAL_IDS = frozenset(range(151657, 151669)) | {151704, 151705}

ENDOFTEXT_TOKEN = SPECIAL_TOKENS[151643]
IM_START_TOKEN = SPECIAL_TOKENS[151644]
IM_END_TOKEN = SPECIAL_TOKENS[151645]
AUDIO_BOS_TOKEN = SPECIAL_TOKENS[151669]
AUDIO_EOS_TOKEN = SPECIAL_TOKENS[151670]
AUDIO_TOKEN = SPECIAL_TOKENS[151676]
ASR_TEXT_TOKEN = SPECIAL_TOKENS[151704]
TIMESTAMP_TOKEN = SPECIAL_TOKENS[151705]
AUDIO_TOKEN_ID = 151676
TIMESTAMP_TOKEN_ID = 151705

# Qwen2's pre-tokenizer split (transformers' tokenization_qwen2.PRETOKENIZE_REGEX): contractions,
# letter runs with one leading non-letter, single digits, punctuation runs, newlines, spaces.
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# --------------------------------------------------------------------------------------------
# Prompt
# --------------------------------------------------------------------------------------------

# [TF] The processor's chat template as convert_qwen3_asr_to_hf.py writes it into the -hf repos
# (rewritten here, equivalent output): the original repo's template (one system turn holding
# all system text, i.e. the context; one user turn with one audio placeholder per audio) plus
# assistant turns rendered verbatim inside `{% generation %}`, so
# `return_assistant_tokens_mask=True` marks the transcript. [TF]'s processor test expects, for
# one audio and no system message:
#   <|im_start|>system\n<|im_end|>\n<|im_start|>user\n<|audio_start|><|audio_pad|><|audio_end|>
#   <|im_end|>\n<|im_start|>assistant\n
# `apply_transcription_request(language=...)` prefills the assistant turn with
# "language <Name><asr_text>" and renders with continue_final_message=True; [ORIG] appends the
# same string after the generation prompt. The model then writes the transcript and <|im_end|>.
CHAT_TEMPLATE = (
    "{%- set ctx = namespace(system='', audio='') -%}\n"
    "{%- for message in messages -%}\n"
    "  {%- if message.content is string -%}\n"
    "    {%- if message.role == 'system' -%}\n"
    "      {%- set ctx.system = ctx.system + message.content -%}\n"
    "    {%- endif -%}\n"
    "  {%- else -%}\n"
    "    {%- for part in message.content -%}\n"
    "      {%- if message.role == 'system' and part.type == 'text' and part.text is defined -%}\n"
    "        {%- set ctx.system = ctx.system + part.text -%}\n"
    "      {%- endif -%}\n"
    "      {%- if part.type == 'audio' or 'audio' in part or 'audio_url' in part -%}\n"
    "        {%- set ctx.audio = ctx.audio + '<|audio_start|><|audio_pad|><|audio_end|>' -%}\n"
    "      {%- endif -%}\n"
    "    {%- endfor -%}\n"
    "  {%- endif -%}\n"
    "{%- endfor -%}\n"
    "{{- '<|im_start|>system\\n' + ctx.system + '<|im_end|>\\n' -}}\n"
    "{{- '<|im_start|>user\\n' + ctx.audio + '<|im_end|>\\n' -}}\n"
    "{%- for message in messages if message.role == 'assistant' -%}\n"
    "  {%- set reply = namespace(text='') -%}\n"
    "  {%- if message.content is string -%}\n"
    "    {%- set reply.text = message.content -%}\n"
    "  {%- else -%}\n"
    "    {%- for part in message.content -%}\n"
    "      {%- if part.type == 'text' and part.text is defined -%}\n"
    "        {%- set reply.text = reply.text + part.text -%}\n"
    "      {%- endif -%}\n"
    "    {%- endfor -%}\n"
    "  {%- endif -%}\n"
    "  {{- '<|im_start|>assistant\\n' -}}\n"
    "  {% generation %}{{- reply.text + '<|im_end|>\\n' -}}{% endgeneration %}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "  {{- '<|im_start|>assistant\\n' -}}\n"
    "{%- endif -%}"
)

# [TF] processing_qwen3_asr.LANGUAGE_CODE_TO_NAME: the ISO codes transformers can force (the
# model card's "52 languages and dialects" are these 30 plus 22 Chinese dialects, which have no
# forcing code). The forced-aligner subset is 11 of them.
LANGUAGES: tuple[str, ...] = (
    "ar", "yue", "zh", "cs", "da", "nl", "en", "fil", "fi", "fr", "de", "el", "hi", "hu", "id",
    "it", "ja", "ko", "mk", "ms", "fa", "pl", "pt", "ro", "ru", "es", "sv", "th", "tr", "vi",
)  # fmt: skip
ALIGNER_LANGUAGES: tuple[str, ...] = (
    "zh", "en", "yue", "fr", "de", "it", "ja", "ko", "pt", "ru", "es",
)  # fmt: skip

# The forced aligner's prompt ([ORIG] qwen_asr/inference/qwen3_forced_aligner.py,
# `encode_timestamp`): no chat turns, the audio placeholder, then every word followed by two
# `<timestamp>` slots (its start and end), e.g. `<|audio_start|><|audio_pad|><|audio_end|>
# 환자분<timestamp><timestamp>오늘<timestamp><timestamp>`. [TF]'s
# `prepare_forced_aligner_inputs` renders one user message of [audio, word, word, ...] through
# the aligner repo's template; this template (written here) renders that message the same way.
ALIGNER_PROMPT_SLOTS = TIMESTAMP_TOKEN + TIMESTAMP_TOKEN
ALIGNER_CHAT_TEMPLATE = (
    "{%- for message in messages if message.role == 'user' -%}\n"
    "  {%- for part in message.content -%}\n"
    "    {%- if part.type == 'audio' or 'audio' in part or 'audio_url' in part -%}\n"
    "      {{- '<|audio_start|><|audio_pad|><|audio_end|>' -}}\n"
    "    {%- elif part.type == 'text' -%}\n"
    "      {{- part.text + '<timestamp><timestamp>' -}}\n"
    "    {%- endif -%}\n"
    "  {%- endfor -%}\n"
    "{%- endfor -%}"
)

# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------

# [TF] convert_qwen3_asr_to_hf.py write_asr_model: the -hf repos' generation_config.json.
# max_new_tokens=512 is [ORIG]'s transformers-backend default. (eos 151643 <|endoftext|> and
# 151645 <|im_end|>; pad is <|im_end|>, matching Qwen3ASRConfig.pad_token_id, not <|endoftext|>.)
GENERATION_CONFIG: dict[str, Any] = {
    "eos_token_id": [151643, 151645],
    "pad_token_id": 151645,
    "do_sample": False,
    "max_new_tokens": 512,
}

# Encoder fields shared by every release ([PORT] config.json quotes; [TF] converter).
_ENCODER_COMMON: dict[str, Any] = {
    "model_type": "qwen3_asr_encoder",
    "num_mel_bins": 128,
    "activation_function": "gelu",
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "scale_embedding": False,
    "initializer_range": 0.02,
    "n_window": 50,  # 100 mel frames (1 s) per conv chunk -> 13 encoder frames
    "n_window_infer": 800,  # attention windows of 8 s = 104 encoder frames
    "downsample_hidden_size": 480,
    # [TF] the converter replaces the original max_source_positions=1500 by 13: positions
    # restart in every 100-frame chunk.
    "max_position_embeddings": 13,
}
# Qwen3 decoder fields shared by every release ([PORT]; [TF] Qwen3ASRConfig text defaults).
_DECODER_COMMON: dict[str, Any] = {
    "model_type": "qwen3",
    "vocab_size": VOCAB_SIZE,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 65536,
    "rms_norm_eps": 1e-6,
    # The original's M-RoPE (mrope_section [24, 20, 20], interleaved) is plain RoPE for audio
    # and text only; the converter strips the M-RoPE fields.
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
    "attention_bias": False,
    "attention_dropout": 0.0,
    "use_cache": True,
    "tie_word_embeddings": True,
}


def _asr_config(encoder: dict[str, Any], decoder: dict[str, Any]) -> dict[str, Any]:
    return {
        "architectures": [ASR_ARCHITECTURE],
        "model_type": MODEL_TYPE,
        "audio_config": {**_ENCODER_COMMON, **encoder},
        "text_config": {**_DECODER_COMMON, **decoder},
        "audio_token_id": AUDIO_TOKEN_ID,
        "timestamp_token_id": TIMESTAMP_TOKEN_ID,
        "pad_token_id": 151645,
        "eos_token_id": [151643, 151645],
        "initializer_range": 0.02,
        "tie_word_embeddings": True,
        "dtype": "bfloat16",
    }


# config.json of the released ASR checkpoints, keyed by the hub id transformers 5.25 loads.
# Widths: [PORT] antirez/qwen-asr qwen_asr.h and MODEL.md, ivan-digital/qwen3-asr-swift
# docs/asr-model.md, and config.json quotes in other ports' tests (all agree). The "0.6B" and
# "1.7B" name the decoder (Qwen3-0.6B / Qwen3-1.7B widths); the encoders add ~0.2-0.3B.
REAL_CONFIGS: dict[str, dict[str, Any]] = {
    HUB_ID_0_6B: _asr_config(
        {"d_model": 896, "encoder_layers": 18, "encoder_attention_heads": 14,
         "encoder_ffn_dim": 3584, "output_dim": 1024},
        {"hidden_size": 1024, "intermediate_size": 3072},
    ),
    HUB_ID_1_7B: _asr_config(
        {"d_model": 1024, "encoder_layers": 24, "encoder_attention_heads": 16,
         "encoder_ffn_dim": 4096, "output_dim": 2048},
        {"hidden_size": 2048, "intermediate_size": 6144},
    ),
}  # fmt: skip

# How the forced aligner's config differs ([PORT] config.json quotes, mlx-community and
# Qwen/Qwen3-ForcedAligner-0.6B; [TF] converter maps classify_num to num_labels): the 1.7B's
# encoder widths with output_dim 1024, the 0.6B decoder, 152064 embedding rows and an untied
# 5000-class `score` head.
ALIGNER_CONFIG: dict[str, Any] = {
    **_asr_config(
        {"d_model": 1024, "encoder_layers": 24, "encoder_attention_heads": 16,
         "encoder_ffn_dim": 4096, "output_dim": 1024},
        {"hidden_size": 1024, "intermediate_size": 3072, "vocab_size": 152064,
         "tie_word_embeddings": False},
    ),
    "architectures": [ALIGNER_ARCHITECTURE],
    "tie_word_embeddings": False,
    "num_labels": 5000,
}  # fmt: skip
# Milliseconds per timestamp class ([TF] Qwen3ASRProcessor.timestamp_segment_time).
ALIGNER_TIMESTAMP_SEGMENT_MS = 80


def real_config(hub_id: str) -> Qwen3ASRConfig:
    """The Qwen3ASRConfig of a released checkpoint (an -hf hub id, or its original id)."""
    from transformers import Qwen3ASRConfig

    configs = {**REAL_CONFIGS, ALIGNER_HUB_ID: ALIGNER_CONFIG}
    converted = {original: hf for hf, original in ORIGINAL_HUB_IDS.items()}
    key = converted.get(hub_id, hub_id)
    if key not in configs:
        raise KeyError(f"no config for {hub_id!r}; known: {', '.join(configs)}")
    return Qwen3ASRConfig(**copy.deepcopy(configs[key]))


# --------------------------------------------------------------------------------------------
# The tiny checkpoint
# --------------------------------------------------------------------------------------------


def tiny_config() -> Qwen3ASRConfig:
    """Qwen3ASRConfig with toy widths and the real structure, vocabulary and token ids."""
    from transformers import Qwen3ASRConfig

    config = copy.deepcopy(REAL_CONFIGS[HUB_ID_0_6B])
    config["audio_config"].update(
        d_model=64,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=128,
        output_dim=64,  # must equal the decoder width: the projector feeds the embeddings
        downsample_hidden_size=32,
    )
    config["text_config"].update(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
    )
    config["dtype"] = "float32"
    return Qwen3ASRConfig(**config)


# Text the tiny tokenizer learns its merges from: clinical Korean (the project's domain) and the
# English and prompt words the template and the model's answer use. Written for this module.
_MERGE_CORPUS = """\
language Korean<asr_text>환자분, 오늘 아침에 혈압약은 드셨어요?
language Korean<asr_text>혈압은 130에 85입니다. 맥박은 분당 72회입니다.
language Korean<asr_text>가슴 통증이 언제부터 시작되었나요? 숨이 차거나 어지러우신가요?
language Korean<asr_text>체온이 38도로 올라서 해열제를 투여했습니다.
language Korean<asr_text>당뇨 약은 식후 30분에 드시고, 혈당은 하루 두 번 재세요.
language Korean<asr_text>고혈압 당뇨 병력이 있으시고, 알레르기는 없으십니다.
language Korean<asr_text>간호사 선생님, 수액 속도를 조금 줄여 주세요.
language Korean<asr_text>의사 선생님께서 내일 오전에 검사 결과를 설명해 드릴 거예요.
language Korean<asr_text>환자는 어제 저녁부터 복통과 구토를 호소했습니다.
language English<asr_text>The patient reports chest pain since this morning.
language English<asr_text>Blood pressure is one hundred thirty over eighty five.
language English<asr_text>Please take the medication after meals, twice a day.
language None<asr_text>
system user assistant language Korean English Chinese Japanese
"""
_MERGE_VOCAB = 256 + 400  # the byte alphabet plus at most 400 merges: small and fast


def _byte_level_tokenizer() -> Any:
    """A Qwen2-style byte-level BPE `tokenizers.Tokenizer` whose added tokens sit on real ids."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from tokenizers.models import BPE

    def shaped(model: Any) -> Any:
        tok = Tokenizer(model)
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        # As in Qwen2's tokenizer.json: byte-level decoding, offsets untouched.
        tok.decoder = decoders.ByteLevel(
            add_prefix_space=False, trim_offsets=False, use_regex=False
        )
        tok.post_processor = processors.ByteLevel(
            add_prefix_space=False, trim_offsets=False, use_regex=False
        )
        return tok

    # Learn merges on the corpus with the whole byte alphabet as the initial symbols, so any
    # UTF-8 text (all of Korean included) tokenizes, at worst byte by byte.
    learner = shaped(BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=_MERGE_VOCAB,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    learner.train_from_iterator(_MERGE_CORPUS.splitlines(), trainer=trainer)
    learned = json.loads(learner.to_str())["model"]
    vocab: dict[str, int] = dict(learned["vocab"])
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    # Unreachable filler entries (no merge builds them) up to the real base vocabulary size, so
    # the first added token gets id 151643 as in the real tokenizer.
    for index in range(len(vocab), BASE_VOCAB_SIZE):
        vocab[f"<|vocab_filler_{index}|>"] = index

    tokenizer = shaped(BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    # Added tokens are numbered in order after the vocabulary: list every id up to the last.
    for token_id in range(BASE_VOCAB_SIZE, max(SPECIAL_TOKENS) + 1):
        content = SPECIAL_TOKENS.get(token_id, f"<|unconfirmed_{token_id}|>")
        added = AddedToken(content, special=token_id not in NON_SPECIAL_IDS, normalized=False)
        tokenizer.add_tokens([added])
        assert tokenizer.token_to_id(content) == token_id, (content, token_id)
    return tokenizer


def _tiny_tokenizer() -> Any:
    """The tiny tokenizer as a transformers tokenizer of the real checkpoint's class."""
    from transformers import Qwen2Tokenizer

    return Qwen2Tokenizer(
        tokenizer_object=_byte_level_tokenizer(),
        # [TF] the auto mapping for qwen3_asr and the processor tests: Qwen2Tokenizer
        # (= Qwen2TokenizerFast, a TokenizersBackend in transformers 5).
        eos_token=IM_END_TOKEN,
        pad_token=ENDOFTEXT_TOKEN,
        unk_token=None,
        bos_token=None,
        errors="replace",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        model_max_length=131072,
        # Qwen-Omni-style tokenizer_config keys: Qwen3ASRProcessor.__init__ reads
        # tokenizer.audio_token / audio_bos_token / audio_eos_token; transformers 5 keeps named
        # `*_token` arguments as model-specific special tokens and saves them both as top-level
        # keys and under `model_specific_special_tokens`.
        audio_token=AUDIO_TOKEN,
        audio_bos_token=AUDIO_BOS_TOKEN,
        audio_eos_token=AUDIO_EOS_TOKEN,
    )


def build_tiny_qwen3_asr(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a random tiny Qwen3-ASR (weights, configs, processor, tokenizer) to `out_dir`.

    Loadable with HF_HUB_OFFLINE=1 by Qwen3ASRForConditionalGeneration / AutoModel* and by
    Qwen3ASRProcessor / AutoProcessor, like an -hf hub checkpoint.
    """
    import torch
    from transformers import (
        GenerationConfig,
        Qwen3ASRFeatureExtractor,
        Qwen3ASRForConditionalGeneration,
        Qwen3ASRProcessor,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Qwen3ASRForConditionalGeneration(tiny_config())
    model.generation_config = GenerationConfig(**GENERATION_CONFIG)
    model.save_pretrained(out_dir)
    processor = Qwen3ASRProcessor(
        # The real checkpoint's feature extractor is the class defaults ([TF] converter):
        # 128 mel bins, 16 kHz, hop 160, n_fft 400, n_window 50, 0.5 s minimum length.
        feature_extractor=Qwen3ASRFeatureExtractor(),
        tokenizer=_tiny_tokenizer(),
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out_dir)
    from voxadapt.manifest import honour_umask

    honour_umask(out_dir)
    return out_dir


def tiny_aligner_config() -> Qwen3ASRConfig:
    """The forced aligner's Qwen3ASRConfig with toy widths: the ASR tiny model's structure,
    the aligner's architecture, untied embeddings and its 5000 timestamp classes."""
    from transformers import Qwen3ASRConfig

    config = tiny_config().to_dict()
    for key in ("num_labels", "tie_word_embeddings", "architectures"):
        config[key] = copy.deepcopy(ALIGNER_CONFIG[key])
    config["text_config"]["tie_word_embeddings"] = False
    config.pop("id2label", None)
    config.pop("label2id", None)
    return Qwen3ASRConfig(**config)


def build_tiny_qwen3_aligner(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a random tiny Qwen3 forced aligner (Qwen3ASRForTokenClassification, processor,
    tokenizer with `<timestamp>` on its real id, the aligner's prompt template) to `out_dir`.

    Loadable with HF_HUB_OFFLINE=1 by Qwen3ASRForTokenClassification and AutoProcessor; its
    random head predicts arbitrary timestamp classes (often one class for every slot).
    """
    import torch
    from transformers import (
        Qwen3ASRFeatureExtractor,
        Qwen3ASRForTokenClassification,
        Qwen3ASRProcessor,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Qwen3ASRForTokenClassification(tiny_aligner_config())
    model.save_pretrained(out_dir)
    processor = Qwen3ASRProcessor(
        feature_extractor=Qwen3ASRFeatureExtractor(),
        tokenizer=_tiny_tokenizer(),
        chat_template=ALIGNER_CHAT_TEMPLATE,
        timestamp_segment_time=ALIGNER_TIMESTAMP_SEGMENT_MS,
    )
    processor.save_pretrained(out_dir)
    from voxadapt.manifest import honour_umask

    honour_umask(out_dir)
    return out_dir
