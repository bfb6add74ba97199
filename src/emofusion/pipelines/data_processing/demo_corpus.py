"""A synthetic emotional-speech corpus, so that a fresh clone runs end to end with no download.

Each speaker has a pitch and a vocal-tract length; each clip is a sequence of voiced syllables
(a glottal pulse train through vowel formant filters) whose prosody follows the emotion: pitch
level and range, speaking rate, loudness, voice tension and breathiness. Every clip is seeded
from (seed, speaker, emotion, take), so the corpus is the same byte for byte on every machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

GENERATOR_VERSION = 1

# pitch: factor on the speaker's f0; range: semitones of the pitch movement; rate: syllables/s;
# loudness: dB; tension: 0 lax .. 1 pressed voice; breathiness: share of aspiration noise;
# slope: overall pitch trend over the utterance in semitones (negative falls).
PROSODY: dict[str, dict[str, float]] = {
    "neutral":   dict(pitch=1.00, range=2.0, rate=4.0, loudness=0, tension=0.4, breathiness=0.05, slope=-2),
    "calm":      dict(pitch=0.95, range=1.5, rate=3.2, loudness=-4, tension=0.2, breathiness=0.15, slope=-1),
    "happy":     dict(pitch=1.25, range=7.0, rate=5.0, loudness=3, tension=0.5, breathiness=0.05, slope=0),
    "sad":       dict(pitch=0.88, range=1.0, rate=2.7, loudness=-6, tension=0.1, breathiness=0.25, slope=-4),
    "angry":     dict(pitch=1.30, range=5.0, rate=5.5, loudness=6, tension=0.95, breathiness=0.02, slope=-3),
    "fearful":   dict(pitch=1.45, range=3.0, rate=6.0, loudness=-2, tension=0.6, breathiness=0.2, slope=0),
    "disgust":   dict(pitch=0.92, range=3.5, rate=3.0, loudness=0, tension=0.7, breathiness=0.12, slope=-5),
    "surprised": dict(pitch=1.40, range=9.0, rate=4.5, loudness=3, tension=0.5, breathiness=0.08, slope=6),
}  # fmt: skip

# First three formants (Hz) of five vowels for an adult male vocal tract.
VOWEL_FORMANTS = np.array(
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]],
    dtype=float,
)
FORMANT_BANDWIDTHS = np.array([80.0, 100.0, 120.0])


def demo_speakers(count: int) -> list[dict[str, Any]]:
    """Alternating male and female speakers, each a little higher and shorter than the last."""
    speakers = []
    for index in range(count):
        step = index // 2
        female = index % 2 == 1
        speakers.append({
            "speaker": f"spk{index + 1:02d}",
            "gender": "female" if female else "male",
            "f0_hz": (200.0 + 18 * step) if female else (105.0 + 14 * step),
            "vocal_tract_scale": (0.86 - 0.03 * step) if female else (1.0 - 0.04 * step),
        })
    return speakers


def _glottal_source(f0: np.ndarray, sample_rate: int, tension: float) -> np.ndarray:
    """Differentiated Rosenberg pulses; a pressed voice closes faster, so its spectrum is flatter."""
    phase = np.cumsum(f0 / sample_rate) % 1.0
    rise, fall = 0.4, 0.28 - 0.2 * tension
    flow = np.where(
        phase < rise,
        0.5 * (1 - np.cos(np.pi * phase / rise)),
        np.where(phase < rise + fall, np.cos(0.5 * np.pi * (phase - rise) / fall), 0.0),
    )
    return np.diff(flow, prepend=0.0) * sample_rate / f0.mean()


def _formant_filter(source: np.ndarray, formants: np.ndarray, sample_rate: int) -> np.ndarray:
    # Imported here: scipy.signal takes a second to import, and only the demo needs it.
    from scipy.signal import lfilter

    out = source
    for frequency, bandwidth in zip(formants, FORMANT_BANDWIDTHS, strict=True):
        radius = np.exp(-np.pi * bandwidth / sample_rate)
        theta = 2 * np.pi * min(frequency, 0.45 * sample_rate) / sample_rate
        out = lfilter([1 - radius], [1, -2 * radius * np.cos(theta), radius**2], out)
    return out


def synthesise_clip(
    speaker: dict[str, Any], emotion: str, duration_s: float, sample_rate: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """One utterance: silence, a run of syllables with the emotion's prosody, silence."""
    prosody = PROSODY[emotion]
    total = int(duration_s * sample_rate)
    signal = np.zeros(total)
    start = int(rng.uniform(0.12, 0.3) * sample_rate)
    end = total - int(rng.uniform(0.12, 0.3) * sample_rate)
    base_f0 = speaker["f0_hz"] * prosody["pitch"]
    position = start
    while True:
        syllable = int(sample_rate / prosody["rate"] * rng.uniform(0.75, 1.15))
        voiced = int(syllable * rng.uniform(0.6, 0.8))
        if position + voiced > end:
            break
        progress = (position - start) / max(end - start, 1)
        accent = rng.uniform(-0.5, 0.5) * prosody["range"]
        semitones = prosody["slope"] * progress + accent + np.linspace(0, accent / 3, voiced)
        jitter = 1 + 0.01 * (1 + prosody["tension"]) * rng.standard_normal(voiced).cumsum() / 40
        f0 = base_f0 * 2 ** (semitones / 12) * jitter
        source = _glottal_source(f0, sample_rate, prosody["tension"])
        source += prosody["breathiness"] * rng.standard_normal(voiced) * np.abs(source).mean() * 4
        formants = VOWEL_FORMANTS[rng.integers(len(VOWEL_FORMANTS))] / speaker["vocal_tract_scale"]
        sound = _formant_filter(source, formants * rng.uniform(0.95, 1.05, 3), sample_rate)
        envelope = np.sin(np.linspace(0, np.pi, voiced)) ** 0.6
        signal[position : position + voiced] = sound * envelope
        position += syllable
    signal *= 0.3 * 10 ** (prosody["loudness"] / 20) / (np.abs(signal).max() + 1e-12)
    signal += 10 ** (-55 / 20) * rng.standard_normal(total)  # a quiet room, not digital silence
    return signal.astype(np.float32)


def write_demo_corpus(folder: Path, params: dict[str, Any]) -> None:
    """Write the demo clips and their ``manifest.csv`` into ``folder`` unless the same
    configuration is already there."""
    emotions = list(params["emotions"])
    unknown = sorted(set(emotions) - set(PROSODY))
    if unknown:
        raise ValueError(f"demo_corpus.emotions {unknown} unknown; choose from {sorted(PROSODY)}")
    signature = {"generator_version": GENERATOR_VERSION, **params}
    signature_file = folder / "demo_corpus.json"
    if (folder / "manifest.csv").is_file() and signature_file.is_file():
        if json.loads(signature_file.read_text()) == signature:
            return
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for s, speaker in enumerate(demo_speakers(params["speakers"])):
        for e, emotion in enumerate(emotions):
            for take in range(params["clips_per_emotion"]):
                rng = np.random.default_rng([params["seed"], s, e, take])
                audio = synthesise_clip(speaker, emotion, params["duration_s"],
                                        params["sample_rate"], rng)
                relative = f"{speaker['speaker']}/{speaker['speaker']}_{emotion}_{take:02d}.wav"
                (folder / relative).parent.mkdir(parents=True, exist_ok=True)
                sf.write(folder / relative, audio, params["sample_rate"], subtype="PCM_16")
                rows.append({"path": relative, "label": emotion, "speaker": speaker["speaker"],
                             "gender": speaker["gender"]})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    signature_file.write_text(json.dumps(signature, indent=2))
