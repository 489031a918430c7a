import pytest
import torch

from voxadapt.data import IGNORE_INDEX, Collator, TranscriptionDataset
from voxadapt.errors import VoxadaptError
from voxadapt.families.voxtral import VoxtralPrompts
from voxadapt.manifest import Utterance, read_manifest

from conftest import CLIPS, fit_duration, write_wav


@pytest.fixture(scope="module")
def prompts(processor, spec):
    return VoxtralPrompts(processor, spec)


@pytest.mark.parametrize("language", ["ko", "en", None])
@pytest.mark.parametrize("seconds", [4.0, 40.0])
def test_prompt_equals_mistral_common_request(
    tmp_path, speech, processor, prompts, language, seconds
):
    samples, rate = speech
    path = write_wav(tmp_path / "a.wav", fit_duration(samples, rate, seconds), rate)
    reference = processor.apply_transcription_request(
        audio=str(path), model_id="voxtral", language=language
    )
    n_chunks = reference["input_features"].shape[0]
    assert n_chunks == (2 if seconds > 30 else 1)
    assert prompts.prompt(n_chunks, language) == reference["input_ids"][0].tolist()


def test_prompt_structure_reads_ids_from_the_tokenizer(prompts):
    tekken = prompts.tekken
    ids = prompts.prompt(1, "ko")
    audio = tekken.get_special_token("[AUDIO]")
    assert ids[:3] == [
        tekken.bos_id,
        tekken.get_special_token("[INST]"),
        tekken.get_special_token("[BEGIN_AUDIO]"),
    ]
    assert ids.count(audio) == 375
    assert ids[-1] == tekken.get_special_token("[TRANSCRIBE]")
    assert tekken.decode(ids[-5:-1]).endswith("lang:ko")


def test_examples_mask_the_prompt_and_end_with_eos(sample_manifest, prompts):
    utterances = read_manifest(sample_manifest)
    dataset = TranscriptionDataset(utterances, prompts)
    for index, utterance in enumerate(utterances):
        example = dataset[index]
        prompt = prompts.prompt(1, "ko")
        assert example.input_ids[: len(prompt)] == prompt
        assert example.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
        target = example.labels[len(prompt) :]
        assert target == example.input_ids[len(prompt) :]
        assert target[-1] == prompts.eos_id and IGNORE_INDEX not in target
        assert prompts.decode(target[:-1]) == utterance.text


def test_collator_batches_mixed_lengths_for_the_model(tmp_path, speech, prompts, spec, tiny_model):
    from transformers import VoxtralForConditionalGeneration

    samples, rate = speech
    utterances = []
    for i, seconds in enumerate((3.5, 41.0, 6.0)):
        path = write_wav(tmp_path / f"{i}.wav", fit_duration(samples, rate, seconds), rate)
        utterances.append(Utterance(f"u{i}", str(path), "열이" * (i + 1), "열이", seconds, rate, 1))
    dataset = TranscriptionDataset(utterances, prompts)
    batch = Collator(spec, prompts.pad_id)([dataset[i] for i in range(3)])
    assert batch["input_features"].shape == (4, 128, 3000)  # 1 + 2 + 1 chunks
    assert int((batch["input_ids"] == prompts.audio_token_id).sum()) == 4 * 375
    assert batch["labels"][batch["attention_mask"] == 0].eq(IGNORE_INDEX).all()
    model = VoxtralForConditionalGeneration.from_pretrained(tiny_model)
    with torch.no_grad():
        output = model(**batch)
    assert torch.isfinite(output.loss)
    # the loss covers exactly the target tokens (+EOS): recompute it from the logits
    logits, labels = output.logits[:, :-1], batch["labels"][:, 1:]
    manual = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX
    )
    assert torch.allclose(output.loss, manual, atol=1e-4)
    # the trainer's loss computes logits only from the first label position on: same value
    from voxadapt.training import label_positions_loss

    with torch.no_grad():
        assert torch.allclose(label_positions_loss(model, batch), output.loss, atol=1e-5)


def test_missing_audio_is_reported_before_training(prompts):
    utterance = Utterance("x", "/nowhere/x.wav", "열", "열", 4.0, 16000, 1)
    with pytest.raises(VoxadaptError, match="missing"):
        TranscriptionDataset([utterance], prompts)


def test_samples_are_real_korean_speech():
    assert len(CLIPS) >= 4
