"""emofusion predict's checks that need no trained model: speakers for speaker-normalised models."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.pipeline import Pipeline, node

from emofusion.errors import SpeakersNeededError
from emofusion.inference import (
    _per_file,
    audio_files,
    features_of,
    needs_speakers,
    predict_emotions,
    speakers_from_csv,
)
from emofusion.instances import dotted_dataset_names


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


def test_every_path_gives_each_file_once_or_a_reason(tmp_path):
    (tmp_path / "takes").mkdir()
    (tmp_path / "empty").mkdir()
    for name in ("a.wav", "b.flac"):
        (tmp_path / "takes" / name).write_bytes(b"")
    a = tmp_path / "takes" / "a.wav"
    files, missing = audio_files([a, tmp_path / "takes", a, tmp_path / "empty", tmp_path / "nowhere.wav"])
    assert files == [tmp_path / "takes" / "a.wav", tmp_path / "takes" / "b.flac"]  # a.wav once
    reasons = dict(zip(missing["file"], missing["reason"], strict=True))
    assert list(reasons) == [str(tmp_path / "empty"), str(tmp_path / "nowhere.wav")]
    assert reasons[str(tmp_path / "empty")].startswith("no audio files (.aif, .aiff, .au, .flac")
    assert reasons[str(tmp_path / "nowhere.wav")] == "no such file or folder"


def test_a_file_s_emotion_is_the_mean_of_its_windows_probabilities():
    windows = pd.DataFrame({"file": ["long", "long", "long", "short"], "start_s": [0, 1.5, 3, 0],
                            "emotion": ["sad", "angry", "angry", "sad"],
                            "p_angry": [0.1, 0.6, 0.55, 0.2], "p_sad": [0.9, 0.4, 0.45, 0.8]})
    table = _per_file(windows, ["angry", "sad"]).set_index("file")
    assert table.loc["long", "emotion"] == "sad" and table.loc["long", "windows"] == 3  # 0.583 against 0.417
    assert table.loc["long", "p_angry"] == pytest.approx((0.1 + 0.6 + 0.55) / 3)
    assert table.loc["short", "windows"] == 1
    # Without probabilities, the emotion of most windows.
    assert _per_file(windows.drop(columns=["p_angry", "p_sad"]), ["angry", "sad"]).set_index("file").loc[
        "long", "emotion"] == "angry"


def test_predict_reads_params_as_kedro_run_does():
    """`--params` items are typed as YAML types them and dotted keys nest, as for `kedro run`, so a
    model trained with some `--params` is found with the same string."""
    import click

    from emofusion.cli import _runtime_params, cli

    command = cli.commands["predict"]
    option = next(parameter for parameter in command.params if parameter.name == "params")
    context = click.Context(command)
    given = "corpora=[ravdess],corpus_sources.ravdess.path=/data/r, split.test_size = 0.3 ,a.b=true,a.c=null"
    assert _runtime_params(context, option, given) == {
        "corpora": ["ravdess"], "corpus_sources": {"ravdess": {"path": "/data/r"}},
        "split": {"test_size": 0.3}, "a": {"b": True, "c": None}}
    assert _runtime_params(context, option, "") == {}
    with pytest.raises(click.UsageError, match="Item `corpora` must contain a key and a value"):
        _runtime_params(context, option, "corpora")
    with pytest.raises(click.UsageError, match="Parameter key cannot be an empty string"):
        _runtime_params(context, option, "=3")


def windows_of(corpus_manifest: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each file one window, none rejected: the preprocessing's outputs as predict reads them."""
    manifest = corpus_manifest.assign(source_clip_id=corpus_manifest["clip_id"], window_start_s=0.0)
    return manifest, pd.DataFrame(columns=["clip_id", "reason"])


def test_a_requested_dataset_that_another_is_made_from_is_returned_too():
    # A late fusion of a fine-tuned network (spectrograms) with a fused CNN variant asks for the
    # spectrograms and for features made from them: the runner must not free the first.
    pipelines = {
        "data_processing": Pipeline([node(windows_of, "corpus_manifest",
                                          ["clip_manifest", "audio_rejections"])]),
        "feature_extraction": Pipeline([node(lambda manifest: list(manifest["clip_id"]), "clip_manifest",
                                             "log_mel_spectrogram")]),
        "transfer_features": Pipeline([node(lambda spectrograms, stored: [f"cnn {s}" for s in spectrograms],
                                            ["log_mel_spectrogram", "stored_transfer_features"],
                                            "transfer_features")]),
    }
    with dotted_dataset_names():  # as fusion's namespaces name it
        pipelines["fusion"] = Pipeline([node(lambda cnn: [f"fused {c}" for c in cnn], "transfer_features",
                                             "fusion.mfcc_lpcc_cnn.fused_features")])
    features, windows, rejected = features_of(
        [Path("a.wav"), Path("b.wav")], ["log_mel_spectrogram", "fusion.mfcc_lpcc_cnn.fused_features"],
        pipelines, {"audio": {"duration_s": 3.0}})
    assert features == {"log_mel_spectrogram": ["a.wav", "b.wav"],
                        "fusion.mfcc_lpcc_cnn.fused_features": ["fused cnn a.wav", "fused cnn b.wav"]}
    assert list(windows["file"]) == ["a.wav", "b.wav"] and rejected.empty
