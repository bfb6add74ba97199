"""fine_tuning's nodes with a stand-in network (no TensorFlow): what a model card of a network on
spectrograms standardised per speaker, and of its late fusion, records for `emofusion predict`."""

import numpy as np
import pandas as pd
import pytest

from emofusion.clip_array import ClipArray
from emofusion.pipelines.fine_tuning import estimators, nodes
from emofusion.pipelines.fusion.nodes import fuse_feature_streams, standardise_spectrograms_by_speaker
from emofusion.run_spec import run_spec

EMOTIONS = ["angry", "sad"]


class StandInNetwork:
    """Fits nothing: predicts each clip's emotion from the sign of its mean value."""

    def __init__(self, settings: dict) -> None:
        self.settings = settings
        self.classes_ = np.array(EMOTIONS)
        self.history_ = {"loss": [1.0], "val_loss": [1.0], "accuracy": [0.5], "val_accuracy": [0.5],
                         "image_size": [[48, 48]]}
        self.ran_with_ = {"device": "none"}

    def fit(self, X, y, validation) -> "StandInNetwork":
        return self

    def best_epoch(self) -> int:
        return 1

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        sad = (np.asarray(X, np.float64).reshape(len(X), -1).mean(axis=1) > 0).astype(float)
        return np.column_stack([1 - sad, sad])


@pytest.fixture
def clips() -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """12 clips of 3 speakers, one random fold of 6 training, 3 validation and 3 test clips."""
    ids = [f"c{i}" for i in range(12)]
    manifest = pd.DataFrame({"clip_id": ids, "speaker": ["a", "b", "c"] * 4})
    subsets = ["train"] * 6 + ["validation"] * 3 + ["test"] * 3
    split = pd.DataFrame({"fold": 0, "clip_id": ids, "subset": subsets, "emotion": EMOTIONS * 6})
    return manifest, split, {"split.strategy": "random"}


def test_a_network_on_speaker_standardised_spectrograms_records_it_for_predict(monkeypatch, parameters,
                                                                              clips):
    monkeypatch.setattr(estimators, "FineTunedNetwork", StandInNetwork)
    manifest, split, settings = clips
    parameters["split"]["strategy"] = "random"
    parameters["speaker_statistics"] = {"min_clips": 3}
    parameters["log_mel_spectrogram"] = {"n_mels": 4}
    rng = np.random.default_rng(0)
    made_with = {"log_mel_spectrogram": {"n_mels": 4}}
    spectrograms = ClipArray(manifest["clip_id"], rng.normal(size=(12, 4, 5)).astype(np.float16),
                             {"feature": "log_mel_spectrogram", "made_with": made_with})
    standardised = standardise_spectrograms_by_speaker(manifest, spectrograms, {"min_clips": 3}, parameters)
    parameters["fine_tuning"]["enabled"] = True
    entry = run_spec(parameters).fine_tuning["squeezenet_c2_spk"]

    network, card, tests, held_out = nodes.fine_tune_and_predict(standardised, split, settings, parameters,
                                                                 settings=entry)
    assert list(card["inputs"]) == ["log_mel_spectrogram_spk"]
    assert card["features"]["speaker_normalisation"] == standardised.metadata["speaker_normalisation"]
    assert card["features"]["blocks"][0]["stream"] == "log_mel_spectrogram_spk"
    assert card["classifier"]["speaker_normalisation"] == "speaker"
    assert sorted(tests["clip_id"]) == ["c10", "c11", "c9"]
    # An entry wired to the other spectrograms says so instead of training on them.
    with pytest.raises(ValueError, match="is not standardised per speaker: it is wired to the wrong dataset"):
        nodes.fine_tune_and_predict(spectrograms, split, settings, parameters, settings=entry)

    # Its late fusion with a variant as it is: the card still says the speakers are needed.
    variant = ["mfcc"]
    parameters["fusion_variants"] = {"mfcc": variant}
    mfcc = ClipArray(manifest["clip_id"], rng.normal(size=(12, 3)).astype(np.float32), {"feature": "mfcc"})
    fused = fuse_feature_streams(manifest, variant, parameters["block_weights"], "balanced", {"min_clips": 3},
                                 parameters, mfcc)
    late, late_card, _ = nodes.late_fuse_and_predict(
        fused, split, settings, network, card, held_out, {"variant": "mfcc", "classifier": "svm"}, parameters)
    assert set(late.models) == {"log_mel_spectrogram_spk", "fusion.mfcc.fused_features"}
    assert late_card["features"]["speaker_normalisation"] == card["features"]["speaker_normalisation"]
    assert late_card["inputs"]["log_mel_spectrogram_spk"] == standardised.metadata
