"""Feature extraction against signals whose answers are known."""

import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.signal import lfilter

from emofusion import clip_array
from emofusion.clip_array import ClipArray, joined
from emofusion.pipelines.feature_extraction.features import (
    clip_statistics,
    log_mel_spectrogram,
    lpc,
    lpc_to_lpcc,
    lpcc_frames,
    mfcc_frames,
)
from emofusion.pipelines.feature_extraction.nodes import (
    extract_log_mel_spectrogram,
    extract_lpcc,
    extract_mfcc,
    extract_opensmile_functionals,
)

SR = 16000


def polynomial_from_poles(poles):
    """A(z) = prod(1 - p z^-1) with conjugate pairs, so the coefficients are real."""
    all_poles = [r * np.exp(1j * w) for r, w in poles] + [r * np.exp(-1j * w) for r, w in poles]
    return np.real(np.poly(all_poles))


# Four resonances, like formants: an AR(8) model whose coefficients we know.
TRUE_A = polynomial_from_poles([(0.95, 0.1 * np.pi), (0.9, 0.3 * np.pi), (0.85, 0.55 * np.pi),
                                (0.8, 0.8 * np.pi)])


def ar_signal(a, n, seed=0):
    return lfilter([1.0], a, np.random.default_rng(seed).standard_normal(n))


def cepstrum_by_fft(a, n_ceps, n_fft=1 << 14):
    """Cepstrum of 1/A(z) computed numerically: for a minimum-phase model, c_n = 2 * real
    cepstrum at n > 0."""
    log_magnitude = -np.log(np.abs(np.fft.rfft(a, n_fft)))
    return 2 * np.fft.irfft(log_magnitude, n_fft)[1 : n_ceps + 1]


def test_lpc_recovers_known_ar_coefficients():
    signal = ar_signal(TRUE_A, 50_000)
    estimated = lpc(signal[None, :], order=8)[0]
    np.testing.assert_allclose(estimated, TRUE_A, atol=0.03)


def test_lpc_per_frame_estimates_centre_on_known_coefficients():
    frames = ar_signal(TRUE_A, 400 * 200, seed=1).reshape(200, 400) * np.hamming(400)
    np.testing.assert_allclose(np.median(lpc(frames, order=8), axis=0), TRUE_A, atol=0.1)


def test_lpc_of_silent_frames_is_finite():
    a = lpc(np.zeros((3, 400)), order=12)
    assert np.isfinite(a).all()
    assert np.isfinite(lpc_to_lpcc(a, 12)).all()


def test_lpcc_recursion_matches_cepstrum_computed_by_fft():
    np.testing.assert_allclose(lpc_to_lpcc(TRUE_A[None, :], 12)[0], cepstrum_by_fft(TRUE_A, 12),
                               atol=1e-6)


def test_lpcc_recursion_continues_beyond_the_order():
    a = polynomial_from_poles([(0.9, 0.25 * np.pi)])
    np.testing.assert_allclose(lpc_to_lpcc(a[None, :], 12)[0], cepstrum_by_fft(a, 12), atol=1e-6)


def test_lpcc_frames_of_an_ar_signal_estimate_its_cepstrum():
    signal = ar_signal(TRUE_A, SR * 3, seed=2)
    frames = lpcc_frames(signal, SR, order=8, n_ceps=12, pre_emphasis=0.0, window="hamming", window_ms=25,
                         hop_ms=12.5, active_frame_top_db=60)
    assert frames.shape == (239, 12)  # 25 ms frames every 12.5 ms over 3 s
    np.testing.assert_allclose(frames.mean(axis=0), cepstrum_by_fft(TRUE_A, 12), atol=0.15)


def tone(frequency, seconds=1.0, amplitude=0.5):
    t = np.arange(int(SR * seconds)) / SR
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def test_log_mel_of_a_tone_peaks_in_the_band_of_its_frequency():
    import librosa

    log_mel = log_mel_spectrogram(tone(1000), SR, n_mels=128, window="hamming", window_ms=25, hop_ms=12.5,
                                  top_db=80)
    assert log_mel.shape == (128, 81)  # 1 s / 12.5 ms hop + 1 (centred frames)
    centres = librosa.mel_frequencies(128 + 2, fmax=SR / 2)[1:-1]
    peak_band = np.argmax(log_mel.mean(axis=1))
    assert abs(centres[peak_band] - 1000) < 60
    assert log_mel.max() == 0 and log_mel.min() >= -80


def test_mfcc_frames_skip_silence_and_have_40_coefficients():
    padded = np.concatenate([tone(440, 0.5), np.zeros(SR // 2, dtype=np.float32)])
    frames = mfcc_frames(padded, SR, n_mfcc=40, n_mels=128, window="hamming", window_ms=25, hop_ms=12.5,
                         active_frame_top_db=60)
    assert frames.shape[1] == 40
    # About half of the 81 frames are padding and must not enter the statistics.
    assert 38 <= len(frames) <= 46


def test_clip_statistics_concatenate_in_order():
    frames = np.array([[1.0, 2.0], [3.0, 6.0]])
    np.testing.assert_allclose(clip_statistics(frames, ["mean", "std"]), [2, 4, 1, 2])
    with pytest.raises(ValueError, match="unknown statistics"):
        clip_statistics(frames, ["mode"])


@pytest.fixture(scope="module")
def audio():
    values = np.stack([tone(220), tone(440), tone(880)])
    return ClipArray(np.array(["c/b", "c/a", "c/c"]), values,
                     {"sample_rate": SR, "made_with": {"audio": {"sample_rate": SR}}})


def test_feature_nodes_keep_clip_ids_and_shapes(audio, parameters):
    mfcc = extract_mfcc(audio, dict(parameters["mfcc"], statistics=["mean", "std"]), n_jobs=1)
    lpcc = extract_lpcc(audio, parameters["lpcc"], n_jobs=1)
    log_mel = joined(list(extract_log_mel_spectrogram(audio, parameters["log_mel_spectrogram"], n_jobs=1)))
    for feature in (mfcc, lpcc, log_mel):
        assert list(feature.clip_ids) == ["c/b", "c/a", "c/c"]
    assert mfcc.values.shape == (3, 80) and mfcc.values.dtype == np.float32
    assert mfcc.metadata["columns"][40] == "mfcc_std_00"
    assert lpcc.values.shape == (3, 24)  # 12 LPCCs: clip mean and std
    assert log_mel.values.shape == (3, 128, 81) and log_mel.values.dtype == np.float16
    assert np.isfinite(mfcc.values).all() and np.isfinite(lpcc.values).all()
    # Different tones give different features.
    assert not np.allclose(mfcc.values[0], mfcc.values[1])
    # What each was made with, by parameter path, the audio's included: fusion checks it.
    assert mfcc.metadata["made_with"] == {"audio": {"sample_rate": SR},
                                          "mfcc": dict(parameters["mfcc"], statistics=["mean", "std"])}
    assert lpcc.metadata["made_with"] == {"audio": {"sample_rate": SR}, "lpcc": parameters["lpcc"]}
    assert log_mel.metadata["made_with"] == {"audio": {"sample_rate": SR},
                                             "log_mel_spectrogram": parameters["log_mel_spectrogram"]}


def test_log_mel_spectrograms_come_in_parts_of_the_part_size_in_clip_order(audio, parameters, monkeypatch):
    whole = joined(list(extract_log_mel_spectrogram(audio, parameters["log_mel_spectrogram"], n_jobs=1)))
    monkeypatch.setattr(clip_array, "PART_BYTES", whole.values[0].nbytes * 2)  # two clips a part
    parts = list(extract_log_mel_spectrogram(audio, parameters["log_mel_spectrogram"], n_jobs=1))
    assert [len(part.data) for part in parts] == [2, 1]
    assert [(part.first, part.last) for part in parts] == [(True, False), (False, True)]
    np.testing.assert_array_equal(joined(parts).values, whole.values)
    assert list(joined(parts).clip_ids) == ["c/b", "c/a", "c/c"]


@pytest.mark.parametrize(("stream", "width"), [("egemaps", 88), ("compare", 6373)])
def test_opensmile_functionals_of_tones_have_the_set_s_width_and_finite_values(audio, parameters, stream,
                                                                              width):
    features = extract_opensmile_functionals(audio, parameters["opensmile"][stream], n_jobs=1, stream=stream)
    assert list(features.clip_ids) == ["c/b", "c/a", "c/c"]
    assert features.values.shape == (3, width) and features.values.dtype == np.float32
    assert np.isfinite(features.values).all()
    assert len(features.metadata["columns"]) == width
    assert features.metadata["parameters"] == parameters["opensmile"][stream]
    # Recorded like every other stream, by parameter path: fusion checks it.
    assert features.metadata["made_with"] == {"audio": {"sample_rate": SR},
                                              f"opensmile.{stream}": parameters["opensmile"][stream]}
    if stream == "egemaps":
        # Tones of 220, 440 and 880 Hz: pitch in semitones above 27.5 Hz is 36, 48 and 60.
        f0 = features.values[:, features.metadata["columns"].index("F0semitoneFrom27.5Hz_sma3nz_amean")]
        np.testing.assert_allclose(f0, [36, 48, 60], atol=0.2)


def test_opensmile_refuses_clips_too_short_for_it_and_unknown_sets(parameters):
    short = ClipArray(np.array(["c/a"]), tone(220, seconds=0.02)[None, :],
                      {"sample_rate": SR, "duration_s": 0.02})
    with pytest.raises(ValueError, match="non-finite values for 1 clips"):
        extract_opensmile_functionals(short, parameters["opensmile"]["egemaps"], n_jobs=1, stream="egemaps")
    with pytest.raises(ValueError, match="unknown openSMILE feature set 'eGeMAPS3'"):
        extract_opensmile_functionals(short, {"feature_set": "eGeMAPS3"}, n_jobs=1, stream="egemaps")


def test_mel_power_matches_librosa_melspectrogram():
    import librosa

    from emofusion.pipelines.feature_extraction.features import mel_power

    signal = tone(300) + tone(2000, amplitude=0.1)
    expected = librosa.feature.melspectrogram(y=signal, sr=SR, n_fft=512, win_length=400,
                                              hop_length=200, window="hamming", n_mels=128)
    power = mel_power(signal, SR, n_mels=128, window="hamming", window_ms=25, hop_ms=12.5)
    np.testing.assert_allclose(power, expected, rtol=1e-4, atol=1e-6 * expected.max())


def test_opensmile_runs_beside_tensorflow():
    """openSMILE's native code corrupts the heap of a process that has TensorFlow loaded (the CNN
    step, `emofusion predict` with a CNN model): its functionals are computed in a worker process."""
    script = (
        "import numpy as np, tensorflow as tf\n"
        "tf.keras.Sequential([tf.keras.layers.Dense(2)])(np.zeros((1, 2)))\n"
        "from emofusion.clip_array import ClipArray\n"
        "from emofusion.pipelines.feature_extraction.nodes import extract_opensmile_functionals\n"
        "tone = np.sin(2 * np.pi * 220 * np.arange(16000) / 16000).astype(np.float32)\n"
        "clips = ClipArray(np.array(['a']), tone[None, :], {'sample_rate': 16000, 'duration_s': 1.0})\n"
        "print(extract_opensmile_functionals(clips, {'feature_set': 'eGeMAPSv02'}, n_jobs=1,\n"
        "                                    stream='egemaps').values.shape)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("(1, 88)")
