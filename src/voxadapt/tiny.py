"""A tiny random Voxtral on disk, loadable like a hub checkpoint: for tests and `voxadapt demo`.

Real classes and real tokenizer vocabulary (mistral-common's Tekken file), toy widths:
~17M parameters, most of them the 131072-token embedding and LM head.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import torch

# Special-token ids of Voxtral's Tekken tokenizer that the prompt uses. Everything else reads
# ids from the tokenizer; these exist only to write a compatible tokenizer file.
_SPECIAL_TOKENS = {
    0: "<unk>",
    1: "<s>",
    2: "</s>",
    3: "[INST]",
    4: "[/INST]",
    5: "[AVAILABLE_TOOLS]",
    6: "[/AVAILABLE_TOOLS]",
    7: "[TOOL_RESULTS]",
    8: "[/TOOL_RESULTS]",
    9: "[TOOL_CALLS]",
    10: "[IMG]",
    11: "<pad>",
    12: "[IMG_BREAK]",
    13: "[IMG_END]",
    14: "[PREFIX]",
    15: "[MIDDLE]",
    16: "[SUFFIX]",
    17: "[SYSTEM_PROMPT]",
    18: "[/SYSTEM_PROMPT]",
    19: "[TOOL_CONTENT]",
    24: "[AUDIO]",
    25: "[BEGIN_AUDIO]",
    32: "[ARGS]",
    33: "[CALL_ID]",
    34: "[TRANSCRIBE]",
}
NUM_SPECIAL_TOKENS = 1000
VOCAB_SIZE = 131072
AUDIO_TOKEN_ID = 24


def write_tekken(path: Path) -> Path:
    """Write a v7 Tekken tokenizer with audio support, built from mistral-common's vocabulary."""
    import mistral_common

    source = Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"
    data = json.loads(source.read_text(encoding="utf-8"))
    n_vocab = VOCAB_SIZE - NUM_SPECIAL_TOKENS
    special = [
        {
            "rank": rank,
            "token_str": _SPECIAL_TOKENS.get(rank, f"<SPECIAL_{rank}>"),
            "is_control": True,
        }
        for rank in range(NUM_SPECIAL_TOKENS)
    ]
    tekken = {
        "config": {
            **data["config"],
            "version": "v7",
            "num_vocab_tokens": n_vocab,
            "default_vocab_size": VOCAB_SIZE,
            "default_num_special_tokens": NUM_SPECIAL_TOKENS,
        },
        "vocab": data["vocab"][:n_vocab],
        "special_tokens": special,
        "audio": {
            "sampling_rate": 16000,
            "frame_rate": 12.5,  # 16000 / 160 hop / 2 (conv stride) / 4 (projector grouping)
            "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400},
            "chunk_length_s": 30.0,
        },
    }
    assert all(base64.b64decode(v["token_bytes"]) is not None for v in tekken["vocab"][:1])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tekken, ensure_ascii=False), encoding="utf-8")
    return path


def tiny_config():
    """VoxtralConfig with toy widths; the same structure as Voxtral-Mini-3B."""
    from transformers import VoxtralConfig

    return VoxtralConfig(
        audio_config={
            "model_type": "voxtral_encoder",
            "hidden_size": 64,
            "intermediate_size": 256,  # must be 4 x hidden: the projector groups 4 frames
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_mel_bins": 128,
            "max_source_positions": 1500,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": VOCAB_SIZE,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
        },
        audio_token_id=AUDIO_TOKEN_ID,
    )


def build_tiny_voxtral(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a random tiny Voxtral (weights, config, processor, tokenizer) to `out_dir`."""
    from transformers import (
        MistralCommonBackend,
        VoxtralForConditionalGeneration,
        VoxtralProcessor,
        WhisperFeatureExtractor,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = VoxtralForConditionalGeneration(tiny_config())
    from transformers.models.whisper.modeling_whisper import sinusoids

    # Like the released checkpoints: the encoder's positions are fixed sinusoids (vLLM and
    # mistral's format recompute them instead of storing them).
    for name, parameter in model.named_parameters():
        if name.endswith("audio_tower.embed_positions.weight"):
            with torch.no_grad():
                parameter.copy_(sinusoids(*parameter.shape))
    model.generation_config.pad_token_id = 11
    model.generation_config.eos_token_id = 2
    model.generation_config.bos_token_id = 1
    model.save_pretrained(out_dir)
    tekken = write_tekken(out_dir / "tekken.json")
    processor = VoxtralProcessor(
        feature_extractor=WhisperFeatureExtractor(
            feature_size=128,
            sampling_rate=16000,
            hop_length=160,
            chunk_length=30,
            n_fft=400,
            padding_value=0.0,
            return_attention_mask=False,
        ),
        tokenizer=MistralCommonBackend(tokenizer_path=str(tekken)),
    )
    processor.save_pretrained(out_dir)
    from voxadapt.manifest import honour_umask

    honour_umask(out_dir)
    return out_dir
