"""What a model knows of its training clips' domain, on generated corpora whose domains differ in a
known way: the same speech through another gain, or another spectral tilt."""

import numpy as np
import pandas as pd
import pytest

from emofusion.clip_array import ClipArray
from emofusion.learning.domain import TrainingDomain, describe_domain
from emofusion.pipelines.fusion.nodes import fuse_feature_streams
from emofusion.standardisation import feature_statistics, relative_spread

EMOTIONS = ("angry", "happy", "neutral", "sad")
BANDS = 12  # log band energies (dB), then 4 prosodic features a gain or a tilt leaves alone
# Each emotion's level (dB), boost of the middle bands (dB: effort strengthens 1-3 kHz) and pitch
# (semitones).
LEVEL = {"angry": 8.0, "happy": 5.0, "neutral": 0.0, "sad": -4.0}
EFFORT = {"angry": 6.0, "happy": 3.0, "neutral": 0.0, "sad": -3.0}
PITCH = {"angry": 3.0, "happy": 4.0, "neutral": 0.0, "sad": -2.0}
OPTIONS = {"pass_share": 0.95, "components": 6}


def generated_corpus(name: str, speakers: int = 10, clips: int = 6, gain_db: float = 0.0,
                     tilt_db: float = 0.0, emotions: tuple[str, ...] = EMOTIONS, seed: int = 0
                     ) -> tuple[pd.DataFrame, np.ndarray]:
    """A corpus's clip manifest and features: band energies and prosody set by each clip's emotion,
    its speaker's voice and noise; every clip heard through `gain_db` and a spectral tilt of
    `tilt_db` from the lowest band to the highest (the recording conditions of the corpus)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-0.5, 0.5, BANDS)
    middle = np.exp(-np.square((ramp - 0.1) / 0.2))
    rows, values = [], []
    for speaker in range(speakers):
        voice = rng.normal(0, 1.5, BANDS + 4)
        for emotion in emotions:
            for clip in range(clips):
                bands = LEVEL[emotion] + EFFORT[emotion] * middle + gain_db + tilt_db * ramp
                prosody = np.array([PITCH[emotion], PITCH[emotion] / 2, LEVEL[emotion] / 4, 0.0])
                values.append(np.concatenate([bands, prosody]) + voice + rng.normal(0, 1.5, BANDS + 4))
                rows.append({"clip_id": f"{name}/{speaker}/{emotion}/{clip}", "corpus": name,
                             "speaker": f"{name}:{speaker}", "emotion": emotion})
    return pd.DataFrame(rows), np.asarray(values, dtype=np.float32)


BLOCKS = {"blocks": [{"stream": "bands", "start": 0, "stop": BANDS, "weight": 1.0},
                     {"stream": "prosody", "start": BANDS, "stop": BANDS + 4, "weight": 1.0}]}


def fitted_domain(seed: int = 0) -> TrainingDomain:
    """Fitted on 10 speakers of an acted corpus, its threshold set on 4 other speakers'."""
    _, training = generated_corpus("acted", seed=seed)
    _, validation = generated_corpus("acted", speakers=4, seed=seed + 1)
    return describe_domain(BLOCKS, training, ["acted"] * len(training), validation, OPTIONS)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_out_of_domain_flag_rises_for_a_shifted_corpus_and_stays_low_for_the_training_corpus(seed):
    domain = fitted_domain(seed)
    # New speakers of the training corpus: about 1 - pass_share flagged.
    _, same = generated_corpus("acted", speakers=6, seed=seed + 2)
    assert (~domain.in_domain(same)).mean() <= 0.12
    for shift in ({"gain_db": 20.0}, {"tilt_db": 12.0}):
        _, shifted = generated_corpus("other", speakers=6, seed=seed + 2, **shift)
        assert (~domain.in_domain(shifted)).mean() >= 0.8, shift


def test_the_threshold_passes_the_stated_share_of_the_clips_it_was_set_on_and_no_test_clip_sets_it():
    domain = fitted_domain()
    _, validation = generated_corpus("acted", speakers=4, seed=1)
    assert domain.in_domain(validation).sum() == 93  # the conformal quantile: ceil((n + 1) 0.95) of n = 96
    # Fitted on the training clips alone: other validation clips move the threshold, not the description.
    _, training = generated_corpus("acted")
    other = describe_domain(BLOCKS, training, ["acted"] * len(training), validation[:40], OPTIONS)
    np.testing.assert_array_equal(other.axes_, domain.axes_)
    assert other.calibration_clips_ == 40 and domain.calibration_clips_ == 96


def test_a_fold_s_description_that_only_flags_flags_the_same_clips_at_the_same_distances():
    """A fold whose model no one keeps describes its domain without the raw statistics that
    `--same-domain` needs; its distances, over more clips than one chunk of rows, are the
    formula's: Mahalanobis within the principal axes plus the squared distance off them."""
    _, training = generated_corpus("acted", speakers=30, clips=10)
    _, validation = generated_corpus("acted", speakers=4, seed=1)
    _, test = generated_corpus("other", speakers=8, clips=10, seed=2, tilt_db=6.0)
    full = describe_domain(BLOCKS, training, ["acted"] * len(training), validation, OPTIONS)
    flags_only = describe_domain(BLOCKS, training, None, validation, OPTIONS, raw_statistics=False)
    assert not hasattr(flags_only, "mean_") and hasattr(full, "mean_")
    assert flags_only.threshold_ == full.threshold_
    np.testing.assert_array_equal(flags_only.distance(test), full.distance(test))
    centred = full.scaler_.transform(test).astype(np.float64) - full.centre_
    projected = centred @ full.axes_.T.astype(np.float64)
    expected = ((np.square(projected) / full.variances_).sum(axis=1) / full.within_scale_
                + (np.square(centred).sum(axis=1) - np.square(projected).sum(axis=1)) / full.off_scale_)
    assert len(test) > 256
    np.testing.assert_allclose(full.distance(test), expected, rtol=1e-9)


def test_a_batch_of_one_emotion_spreads_far_less_than_a_corpus_and_a_gain_moves_no_spread():
    _, training = generated_corpus("acted")
    reference = feature_statistics(training)[1]
    _, mixed = generated_corpus("other", speakers=3, gain_db=10.0, seed=3)
    _, angry = generated_corpus("other", speakers=3, gain_db=10.0, emotions=("angry",), seed=3)
    mixed_spread, angry_spread = (relative_spread(feature_statistics(batch)[1], reference)
                                  for batch in (mixed, angry))
    assert mixed_spread > 0.85 and angry_spread < 0.8 * mixed_spread


def test_per_corpus_statistics_remove_a_corpus_s_gain_and_use_no_label():
    acted, acted_values = generated_corpus("acted", speakers=3)
    louder = acted.assign(corpus="louder", clip_id="louder/" + acted["clip_id"])
    manifest = pd.concat([acted, louder], ignore_index=True)
    values = np.vstack([acted_values, acted_values + np.r_[np.full(BANDS, 20.0), np.zeros(4)]])
    stream = ClipArray(manifest["clip_id"].to_numpy(), values.astype(np.float32), {"feature": "bands"})
    variant = {"streams": ["bands"], "speaker_normalisation": "corpus"}

    def fused(clips: pd.DataFrame) -> np.ndarray:
        return fuse_feature_streams(clips, variant, {"bands": 1.0}, "balanced", {"min_clips": 5}, {},
                                    stream).values

    normalised = fused(manifest)
    half = len(acted)
    np.testing.assert_allclose(normalised[half:], normalised[:half], atol=1e-4)  # the gain is gone
    relabelled = manifest.assign(emotion=np.random.default_rng(0).permutation(manifest["emotion"].to_numpy()))
    np.testing.assert_array_equal(fused(relabelled), normalised)
