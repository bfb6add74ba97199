"""emofusion predict's checks that need no trained model: speakers for speaker-normalised models."""

from pathlib import Path

import numpy as np
import pytest

from emofusion.inference import SpeakersNeededError, needs_speakers, predict_emotions, speakers_from_csv


class TrainedOnSpeakers:
    classes_ = np.array(["angry", "sad"])


CARD = {"classes": ["angry", "sad"],
        "features": {"speaker_normalisation": {"by": "speaker", "min_clips": 20,
                                               "fallback": {"mean": [0.0], "std": [1.0]}}}}


def test_a_speaker_normalised_model_refuses_files_without_speakers_and_says_what_it_needs():
    # Refused before any audio is read: no pipeline is needed to get there.
    with pytest.raises(SpeakersNeededError) as refused:
        predict_emotions([Path("a.wav")], "mfcc_spk", TrainedOnSpeakers(), CARD, pipelines={}, parameters={})
    message = str(refused.value)
    assert "standardised per speaker" in message
    assert "--same-speaker" in message and "--speakers FILE.csv with columns path and speaker" in message


def test_speakers_come_from_a_csv_with_paths_relative_to_it(tmp_path):
    (tmp_path / "takes").mkdir()
    table = tmp_path / "takes" / "speakers.csv"
    table.write_text("path,speaker\na.wav,ann\n../b.flac,bob\n")
    files = [tmp_path / "b.flac", tmp_path / "takes" / "a.wav"]
    assert speakers_from_csv(table, files) == ["bob", "ann"]
    with pytest.raises(ValueError, match="gives no speaker for 1 of the 3 files"):
        speakers_from_csv(table, [*files, tmp_path / "c.wav"])
    (tmp_path / "bad.csv").write_text("file,who\na.wav,ann\n")
    with pytest.raises(ValueError, match="needs the columns path and speaker"):
        speakers_from_csv(tmp_path / "bad.csv", files)


def test_variants_that_need_speakers():
    by_speaker = {"speaker_normalisation": "speaker"}
    variants = {"mfcc": ["mfcc"], "off": None, "mfcc_spk": {"streams": ["mfcc"], **by_speaker},
                "late_spk": {"fusion": "late", "streams": ["mfcc", "lpcc"], **by_speaker}}
    assert needs_speakers(variants) == {"mfcc_spk", "late_spk"}
