"""SpecAugment on cached features: real frames only, deterministic, resumable."""

import numpy as np
import pytest

from voxadapt.augment import SpecAugmentOptions, augment_rng, spec_augment
from voxadapt.errors import ConfigError
from voxadapt.features import compute_features

ON = SpecAugmentOptions(
    enabled=True, freq_masks=2, freq_mask_max_bins=27, time_masks=2, time_mask_max_frames=40
)


@pytest.fixture(scope="module")
def clip_features(speech, spec):
    samples, _ = speech
    return compute_features(samples, spec)


def test_only_real_frames_are_masked(clip_features, spec):
    augmented = spec_augment(clip_features, ON, augment_rng(0, 0, "u1"))
    n_real = clip_features.frames.shape[1]
    full, original = augmented.expand(spec), clip_features.expand(spec)
    tail = full.reshape(spec.n_mels, -1)[:, n_real:] if full.shape[0] == 1 else None
    assert tail is not None and (tail == clip_features.pad_value).all()
    assert np.array_equal(
        full.numpy().reshape(spec.n_mels, -1)[:, n_real:],
        original.numpy().reshape(spec.n_mels, -1)[:, n_real:],
    )
    changed = augmented.frames != clip_features.frames
    assert changed.any()  # something was masked
    assert augmented.frames.shape == clip_features.frames.shape
    assert not np.shares_memory(augmented.frames, clip_features.frames)


def test_masks_are_deterministic_per_seed_epoch_and_utterance(clip_features):
    def masked(seed, epoch, ident):
        return spec_augment(clip_features, ON, augment_rng(seed, epoch, ident)).frames

    assert np.array_equal(masked(0, 1, "u1"), masked(0, 1, "u1"))
    assert not np.array_equal(masked(0, 1, "u1"), masked(0, 2, "u1"))
    assert not np.array_equal(masked(0, 1, "u1"), masked(0, 1, "u2"))
    assert not np.array_equal(masked(0, 1, "u1"), masked(1, 1, "u1"))


def test_mask_widths_respect_the_options(clip_features):
    options = SpecAugmentOptions(enabled=True, freq_masks=1, freq_mask_max_bins=5, time_masks=0)
    for epoch in range(20):
        frames = spec_augment(clip_features, options, augment_rng(0, epoch, "u")).frames
        rows = np.where((frames != clip_features.frames).any(axis=1))[0]
        assert len(rows) <= 5 and (len(rows) == 0 or rows.max() - rows.min() < 5)
    options = SpecAugmentOptions(
        enabled=True, freq_masks=0, time_masks=1, time_mask_max_frames=1000, time_mask_max_ratio=0.1
    )
    n = clip_features.frames.shape[1]
    for epoch in range(20):
        frames = spec_augment(clip_features, options, augment_rng(0, epoch, "u")).frames
        columns = np.where((frames != clip_features.frames).any(axis=0))[0]
        assert len(columns) <= int(0.1 * n)


def test_time_warp_keeps_the_shape_and_the_ends(clip_features):
    options = SpecAugmentOptions(enabled=True, freq_masks=0, time_masks=0, time_warp_frames=20)
    warped = spec_augment(clip_features, options, augment_rng(0, 0, "u")).frames
    assert warped.shape == clip_features.frames.shape
    np.testing.assert_allclose(warped[:, 0], clip_features.frames[:, 0], atol=1e-6)
    np.testing.assert_allclose(warped[:, -1], clip_features.frames[:, -1], atol=1e-6)
    assert not np.allclose(warped, clip_features.frames)


def test_fp16_cached_frames_are_augmented_in_float32(clip_features):
    from voxadapt.features import CompactFeatures

    half = CompactFeatures(
        clip_features.frames.astype(np.float16), clip_features.pad_value, clip_features.n_chunks
    )
    out = spec_augment(half, ON, augment_rng(0, 0, "u"))
    assert out.frames.dtype == np.float32 and half.frames.dtype == np.float16


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"freq_masks": -1}, "freq_masks"), ({"time_mask_max_ratio": 0.0}, "time_mask_max_ratio")],
)
def test_bad_options_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        SpecAugmentOptions(**changes)


def test_speed_perturbation_draws_one_cached_factor_per_clip_and_epoch(
    tiny_model, processor, spec, sample_manifest, tmp_path, caplog
):
    from voxadapt.data import TranscriptionDataset
    from voxadapt.families.voxtral import VoxtralPrompts
    from voxadapt.features import FeatureStore, utterance_key
    from voxadapt.manifest import read_manifest
    from voxadapt.stages.cache import CacheConfig, build_cache

    speeds = [0.9, 1.0, 1.1]
    build_cache(CacheConfig([sample_manifest], str(tiny_model), tmp_path, jobs=1, speed=speeds))
    store = FeatureStore(tmp_path, spec)
    utterances = read_manifest(sample_manifest)
    with caplog.at_level("WARNING"):
        dataset = TranscriptionDataset(
            utterances, VoxtralPrompts(processor, spec), store=store, speeds=speeds, seed=3
        )
    assert "not in the feature cache" not in caplog.text  # every factor came from the cache
    drawn = set()
    for epoch in range(6):
        dataset.epoch = epoch
        for index, utterance in enumerate(utterances):
            speed = dataset.speed_of(index)
            assert speed == dataset.speed_of(index)  # deterministic within an epoch
            drawn.add(speed)
            expected = store.get(utterance_key(utterance, spec, speed)).frames
            np.testing.assert_array_equal(dataset[index].features.frames, expected)
    assert drawn == set(speeds)
