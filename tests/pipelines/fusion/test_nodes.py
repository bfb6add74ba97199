"""fusion: streams joined by clip id, and variants that are YAML."""

import numpy as np
import pandas as pd
import pytest

from emofusion.clip_array import ClipArray
from emofusion.errors import FusionConfigError, StaleInputError
from emofusion.instances import validated_fusion_variants
from emofusion.pipelines.fusion.nodes import fuse_feature_streams, standardise_spectrograms_by_speaker

WEIGHTS = {"mfcc": 1.0, "lpcc": 0.5, "transfer_features": 2.0}
SPEAKER_STATISTICS = {"min_clips": 2}


def stream(ids: list[str], width: int, offset: float) -> ClipArray:
    """Row values that encode the clip: clip number + offset, so alignment is visible."""
    values = np.array([[int(i[1:]) + offset] * width for i in ids], dtype=np.float32)
    return ClipArray(np.array(ids), values, {"feature": f"w{width}"})


def test_streams_are_joined_by_clip_id_not_by_position():
    manifest = pd.DataFrame({"clip_id": ["c1", "c2", "c3"]})
    mfcc = stream(["c3", "c1", "c2"], 2, 0.0)
    cnn = ClipArray(np.array(["c2", "c3", "c1", "c9"]),
                    np.array([[[2.5]], [[3.5]], [[1.5]], [[9.5]]], dtype=np.float32), {"backbone": "x"})
    fused = fuse_feature_streams(manifest, ["mfcc", "transfer_features"], WEIGHTS, "balanced",
                                 SPEAKER_STATISTICS, {}, mfcc, cnn)
    assert list(fused.clip_ids) == ["c1", "c2", "c3"]
    assert np.asarray(fused.values).tolist() == [[1, 1, 1.5], [2, 2, 2.5], [3, 3, 3.5]]
    assert [(b["stream"], b["start"], b["stop"], b["weight"]) for b in fused.metadata["blocks"]] == [
        ("mfcc", 0, 2, 1.0), ("transfer_features", 2, 3, 2.0)]
    assert fused.metadata["blocks"][1]["source"] == {"backbone": "x"}
    assert fused.metadata["fusion"] == "early" and fused.metadata["groups"] == [["mfcc", "transfer_features"]]
    assert fused.metadata["speaker_normalisation"] is None


def test_a_late_variant_fuses_the_same_columns_and_records_its_groups():
    manifest = pd.DataFrame({"clip_id": ["c1", "c2"]})
    late = {"fusion": "late", "streams": [["mfcc", "lpcc"], "transfer_features"]}
    fused = fuse_feature_streams(manifest, late, WEIGHTS, "standard", SPEAKER_STATISTICS, {},
                                 *(stream(["c1", "c2"], width, 0) for width in (2, 1, 3)))
    assert fused.values.shape == (2, 6)
    assert fused.metadata["fusion"] == "late" and fused.metadata["block_scaling"] == "standard"
    assert fused.metadata["groups"] == [["mfcc", "lpcc"], ["transfer_features"]]
    assert validated_fusion_variants({"x": late, "off": None}, WEIGHTS) == {"x": {
        "fusion": "late", "groups": [["mfcc", "lpcc"], ["transfer_features"]],
        "streams": ["mfcc", "lpcc", "transfer_features"], "speaker_normalisation": "none"}}


def speaker_corpus(seed: int = 0) -> tuple[pd.DataFrame, ClipArray, ClipArray]:
    """Speakers a (4 clips), b (3), c (1) and one clip without a speaker; voices differ in level."""
    rng = np.random.default_rng(seed)
    speakers = ["a", "b", "a", "c", "b", "a", None, "b", "a"]
    ids = [f"c{i}" for i in range(len(speakers))]
    manifest = pd.DataFrame({"clip_id": ids, "speaker": speakers,
                             "emotion": rng.choice(["angry", "sad", "happy"], len(ids))})
    offset = np.array([{"a": 10.0, "b": -5.0, "c": 2.0}.get(s, 0.0) for s in speakers])[:, None]
    mfcc = ClipArray(np.array(ids), (offset + rng.normal(size=(len(ids), 3))).astype(np.float32))
    lpcc = ClipArray(np.array(ids), (3 * offset + rng.normal(size=(len(ids), 2))).astype(np.float32))
    return manifest, mfcc, lpcc


def speaker_normalised(manifest: pd.DataFrame, statistics: dict, *streams: ClipArray) -> ClipArray:
    variant = {"streams": ["mfcc", "lpcc"], "speaker_normalisation": "speaker"}
    return fuse_feature_streams(manifest, variant, WEIGHTS, "balanced", statistics, {}, *streams)


def test_speaker_normalisation_uses_no_label_and_no_other_speaker_s_clips():
    manifest, mfcc, lpcc = speaker_corpus()
    fused = speaker_normalised(manifest, SPEAKER_STATISTICS, mfcc, lpcc)
    a = (manifest["speaker"] == "a").to_numpy()
    raw = np.hstack([mfcc.values, lpcc.values]).astype(np.float64)[a]
    np.testing.assert_allclose(fused.values[a], (raw - raw.mean(axis=0)) / raw.std(axis=0), atol=1e-5)

    # Other labels, other speakers' features, another clip order: speaker a's rows are the same.
    rng = np.random.default_rng(1)
    shuffled = manifest.assign(emotion=rng.permutation(manifest["emotion"].to_numpy())).iloc[::-1]
    others = ~a[:, None]
    changed = [ClipArray(s.clip_ids, np.where(others, rng.normal(size=s.values.shape) * 50, s.values)
                         .astype(np.float32)) for s in (mfcc, lpcc)]
    again = speaker_normalised(shuffled, SPEAKER_STATISTICS, *changed)
    np.testing.assert_array_equal(again.select(fused.clip_ids[a]).values, fused.values[a])


def test_corpus_normalisation_removes_a_corpus_s_gain_and_reads_no_label(caplog):
    """Two corpora, one recorded 20 dB louder: its features shifted and scaled. Per corpus, each
    corpus's columns have mean 0 and standard deviation 1, whatever the labels or speakers say."""
    rng = np.random.default_rng(0)
    ids = [f"c{i}" for i in range(40)]
    corpus = np.repeat(["acted", "natural"], 20)
    manifest = pd.DataFrame({"clip_id": ids, "corpus": corpus, "speaker": rng.choice(["a", "b"], 40),
                             "emotion": rng.choice(["angry", "sad"], 40)})
    values = rng.normal(size=(40, 3)) * np.where(corpus == "natural", 10.0, 1.0)[:, None]
    values += np.where(corpus == "natural", 50.0, 0.0)[:, None]
    mfcc = ClipArray(np.array(ids), values.astype(np.float32))
    variant = {"streams": ["mfcc"], "speaker_normalisation": "corpus"}
    with caplog.at_level("INFO", logger="emofusion"):
        fused = fuse_feature_streams(manifest, variant, WEIGHTS, "balanced", SPEAKER_STATISTICS, {}, mfcc)
    for name in ("acted", "natural"):
        rows = fused.values[corpus == name]
        np.testing.assert_allclose(rows.mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(rows.std(axis=0), 1, atol=1e-5)
    assert fused.metadata["speaker_normalisation"]["by"] == "corpus"
    assert "by the statistics of their own corpus (2 corpora)" in caplog.text
    relabelled = manifest.assign(emotion=rng.permutation(manifest["emotion"].to_numpy()), speaker="z")
    again = fuse_feature_streams(relabelled, variant, WEIGHTS, "balanced", SPEAKER_STATISTICS, {}, mfcc)
    np.testing.assert_array_equal(again.values, fused.values)


def test_clips_of_too_small_or_unknown_speakers_fall_back_to_all_clips_or_given_statistics(caplog):
    manifest, mfcc, lpcc = speaker_corpus()
    raw = np.hstack([mfcc.values, lpcc.values]).astype(np.float64)
    fallback = ((manifest["speaker"] == "c") | manifest["speaker"].isna()).to_numpy()
    with caplog.at_level("INFO"):
        fused = speaker_normalised(manifest, {"min_clips": 3}, mfcc, lpcc)
    assert "2 clips without a speaker or with fewer than 3 recordings of theirs fell back" in caplog.text
    normalisation = fused.metadata["speaker_normalisation"]
    assert normalisation["clip_counts"] | {"spread": None} == {"speakers": 2, "normalised": 7, "fallback": 2,
                                                              "spread": None}
    assert set(normalisation["clip_counts"]["spread"]) == {"a", "b"}  # the speakers of their own statistics
    np.testing.assert_allclose(normalisation["fallback"]["mean"], raw.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(fused.values[fallback], (raw[fallback] - raw.mean(axis=0)) / raw.std(axis=0),
                               atol=1e-5)

    # As `emofusion predict` does: the training run's statistics for clips without enough of their speaker.
    given = {"mean": [1.0] * 5, "std": [2.0] * 5}
    predicted = speaker_normalised(manifest, {"min_clips": 3, "fallback": given}, mfcc, lpcc)
    np.testing.assert_allclose(predicted.values[fallback], (raw[fallback] - 1) / 2, atol=1e-5)
    np.testing.assert_array_equal(predicted.values[~fallback], fused.values[~fallback])
    assert predicted.metadata["speaker_normalisation"]["fallback"] == given


def test_a_speaker_s_recordings_are_counted_not_the_windows_cut_from_them(caplog):
    """Speaker a: one long recording cut into 4 windows; speaker b: 3 recordings, one cut into 2. With
    min_clips 3, a's windows would standardise one recording by itself: they fall back to all clips,
    in fused features and spectrograms alike."""
    sources = ["r1", "r1", "r1", "r1", "r2", "r3", "r3", "r4"]
    manifest = pd.DataFrame({"clip_id": [f"c{i}" for i in range(8)], "speaker": ["a"] * 4 + ["b"] * 4,
                             "source_clip_id": sources})
    rng = np.random.default_rng(3)
    ids = manifest["clip_id"].to_numpy()
    mfcc, lpcc = (ClipArray(ids, rng.normal(size=(8, width)).astype(np.float32)) for width in (3, 2))
    with caplog.at_level("INFO"):
        fused = speaker_normalised(manifest, {"min_clips": 3}, mfcc, lpcc)
    assert "4 clips without a speaker or with fewer than 3 recordings of theirs fell back" in caplog.text
    assert fused.metadata["speaker_normalisation"]["clip_counts"] | {"spread": None} == {
        "speakers": 1, "normalised": 4, "fallback": 4, "spread": None}
    raw = np.hstack([mfcc.values, lpcc.values]).astype(np.float64)
    a = (manifest["speaker"] == "a").to_numpy()
    np.testing.assert_allclose(fused.values[a], ((raw - raw.mean(axis=0)) / raw.std(axis=0))[a], atol=1e-5)
    spectrograms = ClipArray(ids, rng.normal(size=(8, 4, 6)).astype(np.float32),
                             {"feature": "log_mel_spectrogram", "made_with": dict(SPECTROGRAM_RUN)})
    standardised = standardise_spectrograms_by_speaker(manifest, spectrograms, {"min_clips": 3},
                                                       SPECTROGRAM_RUN)
    assert standardised.metadata["speaker_normalisation"]["clip_counts"]["fallback"] == 4


SPECTROGRAM_RUN = {"log_mel_spectrogram": {"n_mels": 4}}  # the run's parameters they were made with


def by_speaker(manifest: pd.DataFrame, spectrograms: ClipArray, statistics: dict,
               run: dict = SPECTROGRAM_RUN) -> ClipArray:
    return standardise_spectrograms_by_speaker(manifest, spectrograms, statistics, run)


def speaker_spectrograms(dtype: str = "float32") -> tuple[pd.DataFrame, ClipArray]:
    """speaker_corpus's speakers, (clips, 4 mels, 6 frames): each voice its own level and spread per
    band; the array's clips in another order than the manifest's."""
    manifest, _, _ = speaker_corpus()
    rng = np.random.default_rng(2)
    voice = {"a": (10.0, 3.0), "b": (-5.0, 0.5), "c": (2.0, 1.0)}
    level_spread = [voice.get(speaker, (0.0, 2.0)) for speaker in manifest["speaker"]]
    values = np.stack([level * np.arange(1, 5)[:, None] + spread * rng.normal(size=(4, 6))
                       for level, spread in level_spread])
    order = np.arange(len(manifest))[::-1]
    return manifest, ClipArray(manifest["clip_id"].to_numpy()[order], values[order].astype(dtype),
                               {"feature": "log_mel_spectrogram", "made_with": dict(SPECTROGRAM_RUN)})


def test_spectrograms_are_standardised_per_mel_band_by_their_own_speaker(caplog):
    manifest, spectrograms = speaker_spectrograms()
    with caplog.at_level("INFO"):
        standardised = by_speaker(manifest, spectrograms, {"min_clips": 3})
    assert list(standardised.clip_ids) == list(manifest["clip_id"])  # the manifest's order
    assert standardised.values.dtype == np.float32 and standardised.values.shape == (9, 4, 6)
    for speaker in ("a", "b"):  # 4 and 3 clips: their own statistics, per band over clips and frames
        own = standardised.values[(manifest["speaker"] == speaker).to_numpy()]
        np.testing.assert_allclose(own.mean(axis=(0, 2)), 0, atol=1e-5)
        np.testing.assert_allclose(own.std(axis=(0, 2)), 1, atol=1e-5)
    assert ("Standardised 7 clips (each mel band over its frames) by the statistics of their own speaker "
            "(2 speakers); 2 clips without a speaker or with fewer than 3 recordings of theirs fell back"
            ) in caplog.text
    # Speaker c (1 clip) and the clip without a speaker: every clip's statistics, per band.
    raw = spectrograms.select(list(manifest["clip_id"])).values.astype(np.float64)
    mean, std = raw.mean(axis=(0, 2)), raw.std(axis=(0, 2))
    fallback = ((manifest["speaker"] == "c") | manifest["speaker"].isna()).to_numpy()
    np.testing.assert_allclose(standardised.values[fallback],
                               (raw[fallback] - mean[:, None]) / std[:, None], atol=1e-5)
    a = raw[(manifest["speaker"] == "a").to_numpy()]  # one mean and spread per band, not per bin
    np.testing.assert_allclose(standardised.values[(manifest["speaker"] == "a").to_numpy()],
                               (a - a.mean(axis=(0, 2))[:, None]) / a.std(axis=(0, 2))[:, None], atol=1e-5)
    normalisation = standardised.metadata["speaker_normalisation"]
    assert normalisation["by"] == "speaker" and normalisation["min_clips"] == 3
    assert normalisation["clip_counts"] | {"spread": None} == {"speakers": 2, "normalised": 7, "fallback": 2,
                                                              "spread": None}
    np.testing.assert_allclose(normalisation["fallback"]["mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(normalisation["fallback"]["std"], std, rtol=1e-6)
    assert standardised.metadata["made_with"] == {**SPECTROGRAM_RUN, "speaker_statistics.min_clips": 3}
    assert spectrograms.values.min() < -1  # the input is left as it was

    # As `emofusion predict` does: the training run's statistics for speakers with too few clips.
    given = {"mean": [1.0, 2.0, 3.0, 4.0], "std": [2.0] * 4}
    predicted = by_speaker(manifest, spectrograms, {"min_clips": 3, "fallback": given})
    expected = (raw[fallback] - np.array([1.0, 2.0, 3.0, 4.0])[:, None]) / 2
    np.testing.assert_allclose(predicted.values[fallback], expected, atol=1e-5)
    np.testing.assert_array_equal(predicted.values[~fallback], standardised.values[~fallback])
    assert predicted.metadata["speaker_normalisation"]["fallback"] == given
    with pytest.raises(ValueError, match="the fallback statistics have 2 values for 4 features"):
        by_speaker(manifest, spectrograms, {"min_clips": 3, "fallback": {"mean": [0, 0], "std": [1, 1]}})


def test_float16_spectrograms_stay_float16_and_stale_ones_are_refused():
    manifest, spectrograms = speaker_spectrograms("float16")
    standardised = by_speaker(manifest, spectrograms, {"min_clips": 2})
    assert standardised.values.dtype == np.float16
    own = standardised.values[(manifest["speaker"] == "a").to_numpy()].astype(np.float64)
    np.testing.assert_allclose(own.mean(axis=(0, 2)), 0, atol=2e-3)
    with pytest.raises(StaleInputError, match="was made with log_mel_spectrogram.n_mels=4"):
        by_speaker(manifest, spectrograms, {"min_clips": 2}, {"log_mel_spectrogram": {"n_mels": 128}})


def test_a_stream_missing_a_clip_is_named():
    manifest = pd.DataFrame({"clip_id": ["c1", "c2"]})
    with pytest.raises(KeyError, match="'lpcc' lacks 1 of the 2 clips"):
        fuse_feature_streams(manifest, ["mfcc", "lpcc"], WEIGHTS, "balanced", SPEAKER_STATISTICS, {},
                             stream(["c1", "c2"], 2, 0), stream(["c1"], 2, 0))


def test_a_stream_made_with_other_settings_than_the_run_asks_for_is_refused():
    """A stored stream is not remade when its pipeline is not part of the run: fusion compares what it
    was made with (its `made_with`, the audio's included) with the run's parameters."""
    manifest = pd.DataFrame({"clip_id": ["c1", "c2"]})
    made_with = {"audio": {"sample_rate": 16000, "normalise": "peak"}, "mfcc": {"n_mfcc": 40, "n_mels": 128}}
    mfcc = ClipArray(np.array(["c1", "c2"]), np.zeros((2, 3), np.float32), {"made_with": made_with})
    run = {"audio": {"sample_rate": 16000, "normalise": "rms"}, "mfcc": {"n_mfcc": 20, "n_mels": 128},
           "block_weights": WEIGHTS}
    with pytest.raises(StaleInputError) as refused:
        fuse_feature_streams(manifest, ["mfcc"], WEIGHTS, "balanced", SPEAKER_STATISTICS, run, mfcc)
    assert str(refused.value).startswith(
        "mfcc was made with audio.normalise=peak, mfcc.n_mfcc=40; this run asks for audio.normalise=rms, "
        "mfcc.n_mfcc=20. Make it again with this run's settings (the same --params or --env) first: "
        "`kedro run --to-outputs=mfcc`")
    fused = fuse_feature_streams(manifest, ["mfcc"], WEIGHTS, "balanced", SPEAKER_STATISTICS, made_with, mfcc)
    assert fused.metadata["made_with"] == {**made_with, "fusion_variant": ["mfcc"],
                                           "block_scaling": "balanced", "block_weights.mfcc": 1.0}


def test_an_opensmile_stream_made_with_another_feature_set_is_refused_with_the_command_that_remakes_it():
    """openSMILE's streams record their entry of `opensmile` as every other stream records its group."""
    manifest = pd.DataFrame({"clip_id": ["c1", "c2"]})
    made_with = {"audio": {"sample_rate": 16000}, "opensmile.egemaps": {"feature_set": "eGeMAPSv02"}}
    egemaps = ClipArray(np.array(["c1", "c2"]), np.zeros((2, 3), np.float32), {"made_with": made_with})
    weights = {"egemaps": 1.0}
    run = {"audio": {"sample_rate": 16000}, "opensmile": {"egemaps": {"feature_set": "GeMAPSv01b"}},
           "block_weights": weights}
    with pytest.raises(StaleInputError) as refused:
        fuse_feature_streams(manifest, ["egemaps"], weights, "balanced", SPEAKER_STATISTICS, run, egemaps)
    assert str(refused.value) == (
        "egemaps was made with opensmile.egemaps.feature_set=eGeMAPSv02; this run asks for "
        "opensmile.egemaps.feature_set=GeMAPSv01b. Make it again with this run's settings (the same --params "
        "or --env) first: `kedro run --to-outputs=egemaps`, or plain `kedro run`")
    run["opensmile"]["egemaps"]["feature_set"] = "eGeMAPSv02"
    fused = fuse_feature_streams(manifest, ["egemaps"], weights, "balanced", SPEAKER_STATISTICS, run, egemaps)
    assert fused.metadata["made_with"]["opensmile.egemaps"] == {"feature_set": "eGeMAPSv02"}


@pytest.mark.parametrize(("variants", "message"), [
    ({"bad": ["mfcc", "mfccs"]}, r"unknown feature stream\(s\) \['mfccs'\]"),
    ({"bad": []}, "non-empty list"),
    ({"bad": "mfcc"}, "non-empty list"),
    ({"bad": ["mfcc", "mfcc"]}, "names a stream twice"),
    ({"no good": ["mfcc"]}, "Python identifier"),
    ({}, "is empty"),
    ({"bad": {"fusion": "late", "streams": ["mfcc"]}}, "at least two"),
    ({"bad": {"fusion": "middle", "streams": ["mfcc", "lpcc"]}},
     "fusion variant 'bad': fusion: Input should be 'early' or 'late' \\(got 'middle'\\)"),
    ({"bad": {"fusion": "late", "streams": ["mfcc", "lpcc"], "weights": [1, 2]}},
     "weights: Extra inputs are not permitted"),
    ({"bad": {"streams": ["mfcc"], "speaker_normalisation": "room"}},
     "speaker_normalisation: Input should be 'none', 'speaker' or 'corpus' \\(got 'room'\\)"),
])
def test_bad_fusion_variants_are_refused_with_the_reason(variants, message):
    with pytest.raises(FusionConfigError, match=message):
        validated_fusion_variants(variants, WEIGHTS)
