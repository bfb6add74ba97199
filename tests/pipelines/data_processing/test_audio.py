"""Preprocessing of single clips, the preprocess_audio node and the synthetic demo corpus."""

import logging

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from kedro.framework.hooks import hook_impl
from kedro.framework.hooks.manager import _create_hook_manager
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner
from kedro_datasets.pandas import CSVDataset

from emofusion import clip_array
from emofusion.clip_array import ClipArray, joined_outputs
from emofusion.datasets import ClipArrayDataset, ClipTableDataset
from emofusion.errors import CatalogEntryError, ClipRejected, CorpusError
from emofusion.hooks import NodeTimingHooks, StoredInputHooks
from emofusion.pipelines.data_processing.audio import (
    fix_duration,
    normalise,
    preprocess_clip,
    resample,
    to_mono,
    trim_silence,
    window_starts,
)
from emofusion.pipelines.data_processing.corpora import CLIP_COLUMNS, REJECTION_COLUMNS
from emofusion.pipelines.data_processing.demo_corpus import write_demo_corpus
from emofusion.pipelines.data_processing.nodes import preprocess_audio, report_clip_usage

SOURCE_RATE = 44100
TONE_HZ = 440.0


@pytest.fixture
def audio_params(parameters):
    """The real audio parameters, with a short duration to keep the tests fast."""
    return dict(parameters["audio"], duration_s=1.0)


def tone(duration_s, rate=SOURCE_RATE, hz=TONE_HZ, amplitude=0.5):
    t = np.arange(int(round(duration_s * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def write(path, samples, rate=SOURCE_RATE, subtype="PCM_16"):
    sf.write(path, samples, rate, subtype=subtype)
    return str(path)


def expected_length(params):
    return int(round(params["duration_s"] * params["sample_rate"]))


# --- preprocess_clip on good clips ------------------------------------------------------------


@pytest.fixture
def stereo_tone(tmp_path):
    """1.5 s of a 440 Hz tone at 44.1 kHz, louder on the left than on the right."""
    mono = tone(1.5)
    return write(tmp_path / "stereo.wav", np.stack([mono, 0.5 * mono], axis=1))


def test_stereo_tone_becomes_mono_16k_fixed_length_normalised(stereo_tone, audio_params):
    signal, info = preprocess_clip(stereo_tone, audio_params)
    assert signal.ndim == 1
    assert signal.dtype == np.float32
    assert len(signal) == expected_length(audio_params) == 16000
    assert np.isfinite(signal).all()
    peak_db = 20 * np.log10(np.abs(signal).max())
    assert peak_db == pytest.approx(audio_params["level_db"], abs=0.05)
    assert info["source_sample_rate"] == SOURCE_RATE
    assert info["source_channels"] == 2
    assert info["source_duration_s"] == pytest.approx(1.5)
    assert info["speech_duration_s"] == pytest.approx(1.5, abs=0.03)


@pytest.mark.parametrize("duration_s", [0.75, 2.0])
def test_length_is_always_duration_times_rate(stereo_tone, audio_params, duration_s):
    params = dict(audio_params, duration_s=duration_s)
    signal, _ = preprocess_clip(stereo_tone, params)
    assert len(signal) == expected_length(params)
    if duration_s > 1.5:  # padded at the end (the YAML's pad) with exact zeros
        assert audio_params["pad"] == "end"
        assert not signal[-int(0.4 * params["sample_rate"]):].any()


def test_resampling_preserves_tone_frequency(stereo_tone, audio_params):
    signal, _ = preprocess_clip(stereo_tone, audio_params)
    rate = audio_params["sample_rate"]
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    frequencies = np.fft.rfftfreq(len(signal), 1 / rate)
    assert frequencies[np.argmax(spectrum)] == pytest.approx(TONE_HZ, abs=rate / len(signal))


def test_leading_and_trailing_silence_is_trimmed(tmp_path, audio_params):
    silence = np.zeros(SOURCE_RATE, dtype=np.float32)
    path = write(tmp_path / "padded.wav", np.concatenate([silence, tone(1.0), silence]))
    signal, info = preprocess_clip(path, audio_params)
    assert info["source_duration_s"] == pytest.approx(3.0)
    assert info["speech_duration_s"] == pytest.approx(1.0, abs=0.03)
    # The 1 s of tone fills the 1 s output: no stretch of silence is left at either end.
    rate = audio_params["sample_rate"]
    assert np.abs(signal[: rate // 20]).max() > 0.5
    assert np.abs(signal[-rate // 20 :]).max() > 0.5


def test_same_rate_mono_file_is_not_resampled(tmp_path, audio_params):
    rate = audio_params["sample_rate"]
    path = write(tmp_path / "mono16k.wav", tone(1.0, rate=rate), rate=rate)
    signal, info = preprocess_clip(path, audio_params)
    assert info["source_sample_rate"] == rate
    assert info["source_channels"] == 1
    assert len(signal) == expected_length(audio_params)


# --- the pieces -----------------------------------------------------------------------------


@pytest.mark.parametrize(("crop", "expected"), [
    ("start", [0, 1, 2, 3]),
    ("centre", [3, 4, 5, 6]),
    ("end", [6, 7, 8, 9]),
])
def test_fix_duration_crops(crop, expected):
    np.testing.assert_array_equal(fix_duration(np.arange(10), 4, crop, "end"), expected)


def test_fix_duration_crop_centre_odd_excess():
    np.testing.assert_array_equal(fix_duration(np.arange(7), 4, "centre", "end"), [1, 2, 3, 4])


@pytest.mark.parametrize(("pad", "expected"), [
    ("end", [1, 2, 3, 0, 0, 0]),
    ("centre", [0, 1, 2, 3, 0, 0]),
])
def test_fix_duration_pads(pad, expected):
    np.testing.assert_array_equal(fix_duration(np.arange(1, 4), 6, "centre", pad), expected)


def test_fix_duration_exact_length_unchanged():
    np.testing.assert_array_equal(fix_duration(np.arange(5), 5, "centre", "centre"), np.arange(5))


def test_fix_duration_bad_options_raise():
    with pytest.raises(ValueError, match="audio.crop"):
        fix_duration(np.arange(10), 4, "middle", "end")
    with pytest.raises(ValueError, match="audio.pad"):
        fix_duration(np.arange(3), 6, "centre", "start")


def test_normalise_peak_and_rms():
    signal = tone(0.5, rate=16000, amplitude=0.1)
    peak = normalise(signal, "peak", -6.0)
    assert peak.dtype == np.float32
    assert 20 * np.log10(np.abs(peak).max()) == pytest.approx(-6.0, abs=1e-3)
    rms = normalise(signal, "rms", -20.0)
    assert 20 * np.log10(np.sqrt(np.mean(rms.astype(float) ** 2))) == pytest.approx(-20.0, abs=1e-3)
    # The RMS gain stops the peak at 0 dBFS.
    loud = normalise(signal, "rms", 0.0)
    assert np.abs(loud).max() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="audio.normalise"):
        normalise(signal, "lufs", -1.0)


def test_to_mono_and_resample():
    stereo = np.stack([np.ones(4), np.zeros(4)], axis=1).astype(np.float32)
    np.testing.assert_array_equal(to_mono(stereo), [0.5] * 4)
    mono = np.arange(4, dtype=np.float32)
    assert to_mono(mono) is mono
    assert resample(mono, 16000, 16000) is mono
    out = resample(tone(1.0, rate=44100), 44100, 16000)
    assert out.dtype == np.float32
    assert len(out) == 16000


# --- rejections ------------------------------------------------------------------------------


def rejection(path, params):
    with pytest.raises(ClipRejected) as info:
        preprocess_clip(str(path), params)
    return str(info.value)


def test_unreadable_file_is_rejected(tmp_path, audio_params):
    path = tmp_path / "x.wav"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    assert rejection(path, audio_params).startswith("unreadable:")


def test_empty_file_is_rejected(tmp_path, audio_params):
    path = write(tmp_path / "empty.wav", np.zeros((0, 1), dtype=np.float32))
    assert sf.info(path).frames == 0
    assert rejection(path, audio_params).startswith("empty:")


def test_all_zero_file_is_rejected_as_silent(tmp_path, audio_params):
    path = write(tmp_path / "zeros.wav", np.zeros(SOURCE_RATE, dtype=np.float32))
    assert rejection(path, audio_params).startswith("silent:")


def test_very_quiet_tone_is_rejected_as_silent(tmp_path, audio_params):
    quiet = tone(1.0, amplitude=10 ** (-80 / 20))
    path = write(tmp_path / "quiet.wav", quiet, subtype="FLOAT")
    reason = rejection(path, audio_params)
    assert reason.startswith("silent:")
    assert "-80 dBFS" in reason
    assert str(audio_params["silence_threshold_db"]) in reason


def test_short_tone_is_rejected_as_too_short(tmp_path, audio_params):
    path = write(tmp_path / "short.wav", tone(0.1))
    reason = rejection(path, audio_params)
    assert reason.startswith("too short:")
    assert "min_duration_s" in reason


def test_nan_samples_are_rejected_as_non_finite(tmp_path, audio_params):
    samples = tone(1.0)
    samples[1000:1010] = np.nan
    path = write(tmp_path / "nan.wav", samples, subtype="FLOAT")
    assert rejection(path, audio_params).startswith("non-finite:")


# --- the preprocess_audio and report_clip_usage nodes -----------------------------------------


def manifest_for(paths: dict[str, str]) -> pd.DataFrame:
    rows = [{"clip_id": clip_id, "corpus": clip_id.split("/")[0], "path": path, "emotion": "angry",
             "source_label": "angry", "speaker": None, "gender": None, "statement": None}
            for clip_id, path in paths.items()]
    return pd.DataFrame(rows, columns=CLIP_COLUMNS)


@pytest.fixture
def mixed_manifest(tmp_path):
    (tmp_path / "garbage.wav").write_bytes(b"definitely not a wav file" * 20)
    paths = {
        "a/good1": write(tmp_path / "good1.wav", tone(1.2)),
        "a/garbage": str(tmp_path / "garbage.wav"),
        "b/good2": write(tmp_path / "good2.wav", tone(0.8, hz=300.0), rate=22050),
        "b/zeros": write(tmp_path / "zeros.wav", np.zeros(8000, dtype=np.float32), rate=16000),
        "a/good3": write(tmp_path / "good3.wav", np.stack([tone(1.0), tone(1.0)], axis=1)),
        "b/short": write(tmp_path / "short.wav", tone(0.1)),
    }
    return manifest_for(paths)


def test_a_kedro_run_stores_the_audio_part_by_part_as_one_array(mixed_manifest, audio_params, tmp_path,
                                                                  monkeypatch, caplog):
    """Through Kedro's runner, with parts of one clip's audio: the stored outputs are the whole
    ones, and the node is timed to its last part."""
    monkeypatch.setattr(clip_array, "PART_BYTES", 1)
    whole = joined_outputs(preprocess_audio(mixed_manifest, audio_params, n_jobs=1))
    catalog = DataCatalog({
        "corpus_manifest": MemoryDataset(mixed_manifest), "params:audio": MemoryDataset(audio_params),
        "params:n_jobs": MemoryDataset(1),
        "preprocessed_audio": ClipArrayDataset(path=str(tmp_path / "audio"), load_args={"mmap_mode": "r"}),
        "clip_manifest": ClipTableDataset(filepath=str(tmp_path / "clip_manifest.csv")),
        "audio_rejections": ClipTableDataset(filepath=str(tmp_path / "audio_rejections.csv"))})
    saved = []
    timing = NodeTimingHooks()

    class PartsSaved:
        @hook_impl
        def after_dataset_saved(self, dataset_name, data, node):
            saved.append(dataset_name)

    manager = _create_hook_manager()
    manager.register(timing)
    manager.register(PartsSaved())
    caplog.set_level(logging.DEBUG, logger="emofusion.hooks")
    steps = Pipeline([node(preprocess_audio, ["corpus_manifest", "params:audio", "params:n_jobs"],
                           ["preprocessed_audio", "clip_manifest", "audio_rejections"])])
    SequentialRunner().run(steps, catalog, hook_manager=manager)
    assert saved.count("preprocessed_audio") == 4  # a part per good clip, then the rest (a rejection)
    stored = catalog["preprocessed_audio"].load()
    np.testing.assert_array_equal(stored.values, whole[0].values)
    assert stored.clip_ids.tolist() == whole[0].clip_ids.tolist()
    pd.testing.assert_frame_equal(catalog["clip_manifest"].load()[["clip_id", "source_sample_rate"]],
                                  whole[1][["clip_id", "source_sample_rate"]])
    assert sorted(catalog["audio_rejections"].load()["clip_id"]) == sorted(whole[2]["clip_id"])
    assert len([record for record in caplog.records if "took" in record.getMessage()]) == 1


@pytest.mark.parametrize("entry", [CSVDataset(filepath="manifest.csv"), MemoryDataset()])
def test_an_output_made_in_parts_declared_as_a_whole_table_stops_the_run_before_it_starts(entry, tmp_path):
    catalog = DataCatalog({"preprocessed_audio": ClipArrayDataset(path=str(tmp_path / "audio")),
                           "clip_manifest": entry,
                           "audio_rejections": ClipTableDataset(filepath=str(tmp_path / "rejections.csv"))})
    steps = Pipeline([node(preprocess_audio, ["corpus_manifest", "params:audio", "params:n_jobs"],
                           ["preprocessed_audio", "clip_manifest", "audio_rejections"])])
    said = rf"made in parts.*: clip_manifest \({type(entry).__name__}\)"
    with pytest.raises(CatalogEntryError, match=said):
        StoredInputHooks().before_pipeline_run({}, steps, catalog)


def test_preprocess_audio_keeps_good_clips_in_order_and_rejects_bad(mixed_manifest, audio_params):
    audio, clip_manifest, rejected = joined_outputs(preprocess_audio(mixed_manifest, audio_params, n_jobs=1))
    good = ["a/good1", "b/good2", "a/good3"]
    assert isinstance(audio, ClipArray)
    assert audio.clip_ids.tolist() == good
    assert clip_manifest["clip_id"].tolist() == good
    assert audio.values.shape == (3, expected_length(audio_params))
    assert audio.values.dtype == np.float32
    assert audio.metadata["sample_rate"] == audio_params["sample_rate"]
    assert audio.metadata["duration_s"] == audio_params["duration_s"]
    # Each row is that clip's own preprocessed audio.
    for row, clip_id in enumerate(good):
        path = mixed_manifest.set_index("clip_id").loc[clip_id, "path"]
        np.testing.assert_array_equal(audio.values[row], preprocess_clip(path, audio_params)[0])
    assert set(CLIP_COLUMNS) <= set(clip_manifest.columns)
    assert clip_manifest["source_sample_rate"].tolist() == [44100, 22050, 44100]
    assert clip_manifest["source_channels"].tolist() == [1, 1, 2]
    assert clip_manifest["corpus"].tolist() == ["a", "b", "a"]

    assert list(rejected.columns) == REJECTION_COLUMNS
    assert rejected["clip_id"].tolist() == ["a/garbage", "b/zeros", "b/short"]
    assert set(rejected["stage"]) == {"audio"}
    assert rejected["corpus"].tolist() == ["a", "b", "b"]
    assert rejected["path"].tolist() == mixed_manifest.set_index("clip_id").loc[
        ["a/garbage", "b/zeros", "b/short"], "path"].tolist()
    prefixes = [reason.split(":")[0] for reason in rejected["reason"]]
    assert prefixes == ["unreadable", "silent", "too short"]

    report = report_clip_usage(clip_manifest, pd.DataFrame(columns=REJECTION_COLUMNS), rejected)
    assert report["clip_id"].tolist() == ["a/garbage", "b/zeros", "b/short"]


def test_report_clip_usage_combines_both_rejection_tables(mixed_manifest, audio_params):
    _, clip_manifest, rejected = joined_outputs(preprocess_audio(mixed_manifest, audio_params, n_jobs=1))
    scan = pd.DataFrame([{"clip_id": "a/stray", "corpus": "a", "path": "/x/stray.wav",
                          "stage": "scan", "reason": "name does not match"}])
    report = report_clip_usage(clip_manifest, scan, rejected)
    assert list(report.columns) == REJECTION_COLUMNS
    assert report["clip_id"].tolist() == ["a/stray", "a/garbage", "b/zeros", "b/short"]


def test_report_clip_usage_raises_when_every_clip_was_rejected():
    empty = pd.DataFrame(columns=CLIP_COLUMNS)
    rejected = pd.DataFrame([{"clip_id": "a/zeros", "corpus": "a", "path": "/x/zeros.wav",
                              "stage": "audio", "reason": "silent: peak -400 dBFS"}])
    with pytest.raises(CorpusError, match=r"All 1 clips were rejected.*a/zeros: silent"):
        report_clip_usage(empty, pd.DataFrame(columns=REJECTION_COLUMNS), rejected)


def test_all_clips_rejected_end_to_end_raises_corpus_error(tmp_path, audio_params):
    manifest = manifest_for({
        "a/zeros": write(tmp_path / "zeros.wav", np.zeros(8000, dtype=np.float32), rate=16000),
        "a/short": write(tmp_path / "short.wav", tone(0.1)),
    })
    with pytest.raises(CorpusError, match="All 2 clips were rejected"):
        _, clip_manifest, rejected = joined_outputs(preprocess_audio(manifest, audio_params, n_jobs=1))
        report_clip_usage(clip_manifest, pd.DataFrame(columns=REJECTION_COLUMNS), rejected)


# --- the demo corpus -------------------------------------------------------------------------


@pytest.fixture
def demo_params(parameters):
    """The real demo configuration, cut down to a few short clips."""
    return dict(parameters["demo_corpus"], speakers=2, clips_per_emotion=1,
                emotions=["neutral", "angry"], duration_s=0.5)


def test_demo_corpus_is_deterministic(tmp_path, demo_params):
    write_demo_corpus(tmp_path / "one", demo_params)
    write_demo_corpus(tmp_path / "two", demo_params)
    first = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.wav"))
    second = sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*.wav"))
    assert first == second
    assert len(first) == 4
    for relative in first:
        assert (tmp_path / "one" / relative).read_bytes() == (tmp_path / "two" / relative).read_bytes()
    assert (tmp_path / "one" / "manifest.csv").read_bytes() == (tmp_path / "two" / "manifest.csv"
                                                               ).read_bytes()


def test_demo_corpus_manifest_lists_every_file(tmp_path, demo_params):
    folder = tmp_path / "demo"
    write_demo_corpus(folder, demo_params)
    manifest = pd.read_csv(folder / "manifest.csv")
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*.wav")}
    assert set(manifest["path"]) == on_disk
    assert len(manifest) == len(on_disk) == 2 * 1 * 2
    assert set(manifest["label"]) == {"neutral", "angry"}
    assert set(manifest["gender"]) == {"male", "female"}
    info = sf.info(folder / manifest["path"].iloc[0])
    assert info.samplerate == demo_params["sample_rate"]
    assert info.frames == int(demo_params["duration_s"] * demo_params["sample_rate"])


def test_demo_corpus_is_not_rewritten_when_unchanged(tmp_path, demo_params):
    folder = tmp_path / "demo"
    write_demo_corpus(folder, demo_params)
    clip = next(folder.rglob("*.wav"))
    clip.write_bytes(b"marker")
    write_demo_corpus(folder, demo_params)
    assert clip.read_bytes() == b"marker"
    write_demo_corpus(folder, dict(demo_params, seed=demo_params["seed"] + 1))
    assert clip.read_bytes() != b"marker"


@pytest.mark.parametrize(("extension", "rate"), [("flac", 48000), ("ogg", 22050), ("mp3", 44100)])
def test_compressed_formats_at_other_rates_are_read(tmp_path, audio_params, extension, rate):
    path = write(tmp_path / f"clip.{extension}", tone(1.2, rate=rate), rate=rate, subtype=None)
    signal, info = preprocess_clip(path, audio_params)
    assert info["source_sample_rate"] == rate
    assert len(signal) == expected_length(audio_params)
    spectrum = np.abs(np.fft.rfft(signal))
    assert abs(np.argmax(spectrum) * audio_params["sample_rate"] / len(signal) - TONE_HZ) < 3


def median_f0(path):
    import librosa

    signal, rate = sf.read(path)
    f0 = librosa.yin(signal, fmin=60, fmax=600, sr=rate, frame_length=1024)
    loud = librosa.feature.rms(y=signal, frame_length=1024, hop_length=256)[0] > 0.02
    return float(np.median(f0[loud[: len(f0)]]))


def test_demo_speakers_and_emotions_differ_in_pitch(tmp_path, parameters):
    params = dict(parameters["demo_corpus"], speakers=2, clips_per_emotion=1,
                  emotions=["sad", "surprised"], duration_s=1.0)
    write_demo_corpus(tmp_path, params)
    manifest = pd.read_csv(tmp_path / "manifest.csv").set_index(["speaker", "label"])
    f0 = {key: median_f0(tmp_path / path) for key, path in manifest["path"].items()}
    assert manifest.loc[("spk01", "sad"), "gender"] == "male"
    assert manifest.loc[("spk02", "sad"), "gender"] == "female"
    # The female speaker is higher than the male one, and surprise is higher than sadness.
    assert f0[("spk02", "sad")] > 1.5 * f0[("spk01", "sad")]
    for speaker in ("spk01", "spk02"):
        assert f0[(speaker, "surprised")] > 1.3 * f0[(speaker, "sad")]


# --- long clips: cropped and recorded, or cut into windows -------------------------------------


def speech_like(duration_s, rate=SOURCE_RATE):
    """A tone switched on and off every 0.4 s, so that trimming leaves its length alone."""
    signal = tone(duration_s, rate)
    signal[(np.arange(len(signal)) // int(0.4 * rate)) % 2 == 1] *= 0.3
    return signal


def test_a_long_clip_is_cropped_and_the_crop_is_recorded(tmp_path, audio_params):
    path = write(tmp_path / "long.wav", speech_like(3.0))
    manifest = pd.DataFrame({"clip_id": ["long"], "corpus": "c", "path": [path]}
                            ).reindex(columns=CLIP_COLUMNS)
    audio, clip_manifest, _ = joined_outputs(preprocess_audio(manifest, audio_params, n_jobs=1))
    row = clip_manifest.iloc[0]
    assert audio.clip_ids.tolist() == ["long"] and row["source_clip_id"] == "long"
    assert row["speech_duration_s"] == pytest.approx(3.0, abs=0.05)
    assert row["kept_duration_s"] == audio_params["duration_s"]
    assert row["window_start_s"] == pytest.approx((row["speech_duration_s"] - 1.0) / 2, abs=0.01)  # centre


def test_a_long_clip_becomes_windows_of_the_clip_duration_when_asked(tmp_path, audio_params):
    path = write(tmp_path / "long.wav", speech_like(120.0, rate=16000), rate=16000)
    short = write(tmp_path / "short.wav", speech_like(0.8))
    manifest = pd.DataFrame({"clip_id": ["long", "short"], "corpus": "c", "path": [path, short],
                             "speaker": "s1"}).reindex(columns=CLIP_COLUMNS)
    params = dict(audio_params, long_clips="windows", window_hop_s=0.5)
    audio, clip_manifest, rejected = joined_outputs(preprocess_audio(manifest, params, n_jobs=1))
    windows = clip_manifest[clip_manifest["source_clip_id"] == "long"]
    speech_s = windows["speech_duration_s"].iloc[0]
    assert len(windows) == 1 + round((speech_s - 1.0) / 0.5)  # about every 0.5 s, from start to end
    assert windows["window_start_s"].iloc[0] == 0
    assert windows["window_start_s"].iloc[-1] == pytest.approx(speech_s - 1.0, abs=1e-3)
    assert np.diff(windows["window_start_s"]) == pytest.approx(0.5, abs=0.01)
    assert windows["clip_id"].iloc[0] == "long@0.00s" and (windows["speaker"] == "s1").all()
    assert clip_manifest.set_index("clip_id").loc["short", "source_clip_id"] == "short"  # one window: its id
    assert audio.values.shape == (len(clip_manifest), expected_length(params)) and rejected.empty
    assert np.abs(audio.values).max(axis=1) == pytest.approx(10 ** (params["level_db"] / 20), rel=1e-3)


@pytest.mark.parametrize(("seconds", "starts"), [
    (0.8, [0]), (1.0, [0]),
    (1.2, [0.1]),                   # within half a hop: one window, centred as a cropped clip
    (1.3, [0, 0.3]), (3.0, [0, 0.5, 1.0, 1.5, 2.0]), (3.1, [0, 0.525, 1.05, 1.575, 2.1])])
def test_windows_cover_a_signal_from_start_to_end_about_a_hop_apart(seconds, starts):
    rate = 1000
    assert [start / rate for start in window_starts(int(seconds * rate), rate, rate // 2, "centre")
            ] == pytest.approx(starts)


def test_trimming_keeps_exactly_the_samples_librosa_keeps():
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(1)
    for _ in range(40):
        signal = rng.normal(size=int(rng.integers(2000, 40000))).astype(np.float32) * rng.choice([1e-3, 0.5])
        start, stop = sorted(rng.integers(0, len(signal), 2))
        signal[:start] *= rng.choice([0, 1e-4, 1e-2])
        signal[stop:] *= rng.choice([0, 1e-4, 1e-2])
        frame, top_db = int(rng.choice([400, 551])), float(rng.choice([20, 30, 60]))
        expected, _ = librosa.effects.trim(signal, top_db=top_db, frame_length=frame, hop_length=frame // 4)
        np.testing.assert_array_equal(trim_silence(signal, top_db, frame, frame // 4), expected)
