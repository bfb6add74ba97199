"""emofusion predict's checks that need no trained model: speakers for speaker-normalised models."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.pipeline import Pipeline, node

from emofusion.clip_array import ClipArray
from emofusion.errors import (
    DomainBatchError,
    EmoFusionError,
    ModelMismatchError,
    SpeakersNeededError,
    SpeakersTableError,
)
from emofusion.inference import (
    _per_file,
    features_of,
    load_trained_model,
    predict_emotions,
    setting_differences,
)
from emofusion.instances import dotted_dataset_names
from emofusion.learning.domain import describe_domain
from emofusion.learning.folds import stamp_fit_id
from emofusion.pipelines.data_processing.nodes import window_id
from emofusion.pipelines.fusion import create_pipeline as fusion_pipeline
from emofusion.pipelines.fusion.nodes import fuse_feature_streams, standardise_spectrograms_by_speaker
from emofusion.prediction_inputs import audio_files, corpus_note, speaker_fallback_note, speakers_from_csv
from emofusion.run_lock import acquire, lock_path, release
from emofusion.run_spec import run_spec


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
    assert "by the statistics of all the training run's clips" in message and "training clips" not in message


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


def test_a_speakers_csv_that_names_a_file_twice_is_refused_with_the_paths(tmp_path):
    table = tmp_path / "speakers.csv"
    table.write_text("path,speaker\na.wav,ann\nb.wav,bob\n./a.wav,bob\nc.wav,cy\n")
    with pytest.raises(SpeakersTableError, match=r"names 1 file\(s\) more than once: a\.wav, \./a\.wav"
                       ) as refused:
        speakers_from_csv(table, [tmp_path / "a.wav", tmp_path / "b.wav"])
    assert isinstance(refused.value, EmoFusionError) and isinstance(refused.value, ValueError)


def test_models_that_need_speakers(parameters):
    by_speaker = {"speaker_normalisation": "speaker"}
    parameters["fusion_variants"] = {
        "mfcc": ["mfcc"], "off": None, "mfcc_spk": {"streams": ["mfcc"], **by_speaker},
        "late_spk": {"fusion": "late", "streams": ["mfcc", "lpcc"], **by_speaker}}
    parameters["classifiers"] = {"svm": parameters["classifiers"]["svm"]}
    # fine-tuning is off
    assert run_spec(parameters).speaker_normalised_models == {"mfcc_spk.svm", "late_spk.svm"}
    parameters["fine_tuning"]["enabled"] = True
    late = {"kind": "late_fusion", "classifier": "svm"}
    parameters["fine_tuning"]["models"] = {
        "c2": parameters["fine_tuning"]["models"]["squeezenet_c2"],
        "c2_spk": parameters["fine_tuning"]["models"]["squeezenet_c2_spk"],
        "c2_mfcc": {**late, "network": "c2", "variant": "mfcc"},
        "c2_mfcc_spk": {**late, "network": "c2", "variant": "mfcc_spk"},
        "c2_spk_mfcc": {**late, "network": "c2_spk", "variant": "mfcc"}}
    assert run_spec(parameters).speaker_normalised_models == {
        "mfcc_spk.svm", "late_spk.svm", "log_mel_spectrogram_spk.c2_spk",
        "mfcc_spk_spectrogram_late.c2_mfcc_spk", "mfcc_spectrogram_spk_late.c2_spk_mfcc"}


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


class StandIn:
    """A trained model that keeps the features it was asked to predict from."""

    classes_ = np.array(["angry", "sad"])

    def predict_proba(self, X) -> np.ndarray:
        self.seen = X
        rows = len(next(iter(X.values())) if isinstance(X, dict) else X)
        return np.tile([0.25, 0.75], (rows, 1))

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


# The stand-in streams' metadata, as feature_extraction would record it.
SPECTROGRAM = {"feature": "log_mel_spectrogram", "axes": ["clip", "mel", "frame"]}
MFCC = {"feature": "mfcc", "columns": ["m0", "m1", "m2"]}


def stand_in_streams(clip_manifest: pd.DataFrame, level: float) -> tuple[ClipArray, ClipArray]:
    """Spectrograms (clips, 4 mels, 5 frames) and MFCCs (clips, 3) that differ by clip and by band."""
    ids = clip_manifest["clip_id"].astype(str).to_numpy()
    rng = np.random.default_rng(len(ids))
    spectrograms = level * np.arange(1, 5)[:, None] + rng.normal(size=(len(ids), 4, 5))
    mfcc = level * np.arange(3) + rng.normal(size=(len(ids), 3))
    return (ClipArray(ids, spectrograms.astype(np.float32), dict(SPECTROGRAM)),
            ClipArray(ids, mfcc.astype(np.float32), dict(MFCC)))


def stand_in_pipelines(parameters: dict, windows=None) -> dict[str, Pipeline]:
    """The project's fusion wiring on stand-in streams; each file one window unless `windows` cuts it."""
    return {
        "data_processing": Pipeline([node(windows or windows_of, "corpus_manifest",
                                          ["clip_manifest", "audio_rejections"])]),
        "feature_extraction": Pipeline([node(lambda manifest: stand_in_streams(manifest, level=1.0),
                                             "clip_manifest", ["log_mel_spectrogram", "mfcc"])]),
        "transfer_features": Pipeline([]),
        "fusion": fusion_pipeline(run_spec(parameters)),
    }


@pytest.fixture
def spk_parameters(parameters) -> dict:
    """A speaker-normalised fusion variant and network, and their late fusion; min_clips 5."""
    parameters["fusion_variants"] = {"mfcc_spk": {"streams": ["mfcc"], "speaker_normalisation": "speaker"}}
    parameters["fine_tuning"]["enabled"] = True
    parameters["fine_tuning"]["models"] = {
        "c2_spk": parameters["fine_tuning"]["models"]["squeezenet_c2_spk"],
        "c2_spk_mfcc_spk": {"kind": "late_fusion", "network": "c2_spk", "variant": "mfcc_spk",
                            "classifier": "svm"}}
    parameters["speaker_statistics"] = {"min_clips": 5}
    return parameters


def trained_inputs(parameters: dict) -> dict:
    """What the training run recorded of each input: 12 clips of 2 speakers, louder than new files."""
    manifest = pd.DataFrame({"clip_id": [f"t{i}" for i in range(12)], "speaker": ["x", "y"] * 6})
    spectrograms, mfcc = stand_in_streams(manifest, level=20.0)
    statistics = parameters["speaker_statistics"]
    made = {"log_mel_spectrogram_spk": standardise_spectrograms_by_speaker(manifest, spectrograms, statistics,
                                                                           parameters),
            "fusion.mfcc_spk.fused_features": fuse_feature_streams(
                manifest, parameters["fusion_variants"]["mfcc_spk"], parameters["block_weights"],
                parameters["block_scaling"], statistics, parameters, mfcc)}
    return {name: json.loads(json.dumps(array.metadata)) for name, array in made.items()}


def test_a_network_on_spectrograms_standardised_per_speaker_needs_speakers_then_uses_training_fallbacks(
        spk_parameters):
    trained = trained_inputs(spk_parameters)
    pipelines = stand_in_pipelines(spk_parameters)
    spectrograms = trained["log_mel_spectrogram_spk"]
    network_card = {"classes": ["angry", "sad"], "inputs": {"log_mel_spectrogram_spk": spectrograms},
                    "features": {"speaker_normalisation": spectrograms["speaker_normalisation"]}}
    files = [Path("a.wav"), Path("b.wav")]
    network = StandIn()
    with pytest.raises(SpeakersNeededError, match="fewer than 5 files"):
        predict_emotions(files, "log_mel_spectrogram_spk", network, network_card, pipelines, spk_parameters)

    table, _, _ = predict_emotions(files, "log_mel_spectrogram_spk", network, network_card, pipelines,
                                   spk_parameters, speakers=["one speaker"] * 2)  # --same-speaker
    assert list(table["emotion"]) == ["sad", "sad"]
    # One speaker of 2 files, under min_clips: the training run's statistics of each band, not these files'.
    raw, raw_mfcc = (array.values.astype(np.float64) for array in
                     stand_in_streams(pd.DataFrame({"clip_id": ["a.wav", "b.wav"]}), level=1.0))
    fallback = trained["log_mel_spectrogram_spk"]["speaker_normalisation"]["fallback"]
    mean, std = (np.array(fallback[key])[:, None] for key in ("mean", "std"))
    np.testing.assert_allclose(network.seen, (raw - mean) / std, rtol=1e-4, atol=1e-4)

    # Late fusion of both: each input standardised with its own training fallback statistics.
    late_card = {"classes": ["angry", "sad"], "inputs": trained,
                 "features": {"fusion": "late", **network_card["features"]}}
    late = StandIn()
    predict_emotions(files, "mfcc_spk_spectrogram_spk_late", late, late_card, pipelines, spk_parameters,
                     speakers=["ann", "ann"])
    np.testing.assert_allclose(late.seen["log_mel_spectrogram_spk"], network.seen, rtol=1e-5)
    fallback = trained["fusion.mfcc_spk.fused_features"]["speaker_normalisation"]["fallback"]
    expected = (raw_mfcc - fallback["mean"]) / np.array(fallback["std"])
    np.testing.assert_allclose(late.seen["fusion.mfcc_spk.fused_features"], expected, rtol=1e-4, atol=1e-4)


def five_windows_each(corpus_manifest: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each file cut into 5 windows, as a 9-second recording is into 3-second windows every 1.5 s."""
    manifest = corpus_manifest.loc[corpus_manifest.index.repeat(5)].reset_index(drop=True)
    starts = np.tile(np.arange(5) * 1.5, len(corpus_manifest))
    manifest = manifest.assign(source_clip_id=manifest["clip_id"], window_start_s=starts)
    manifest["clip_id"] = [window_id(clip, start) for clip, start in zip(manifest["source_clip_id"], starts,
                                                                          strict=True)]
    return manifest, pd.DataFrame(columns=["clip_id", "reason"])


def test_one_long_recording_of_a_speaker_is_one_file_not_as_many_as_its_windows(spk_parameters):
    # min_clips 5: one recording cut into 5 windows is not standardised by itself, but as in training.
    trained = trained_inputs(spk_parameters)
    pipelines = stand_in_pipelines(spk_parameters, five_windows_each)
    spectrograms = trained["log_mel_spectrogram_spk"]
    card = {"classes": ["angry", "sad"], "inputs": {"log_mel_spectrogram_spk": spectrograms},
            "features": {"speaker_normalisation": spectrograms["speaker_normalisation"]}}
    network = StandIn()
    table, windows, _ = predict_emotions([Path("long.wav")], "log_mel_spectrogram_spk", network, card,
                                         pipelines, spk_parameters, speakers=["one speaker"])
    assert list(table["windows"]) == [5]
    ids = [window_id("long.wav", start) for start in np.arange(5) * 1.5]
    raw = stand_in_streams(pd.DataFrame({"clip_id": ids}), level=1.0)[0].values.astype(np.float64)
    fallback = spectrograms["speaker_normalisation"]["fallback"]
    mean, std = (np.array(fallback[key])[:, None] for key in ("mean", "std"))
    np.testing.assert_allclose(network.seen, (raw - mean) / std, rtol=1e-4, atol=1e-4)
    assert speaker_fallback_note(windows, [Path("long.wav")], ["one speaker"], 5) == (
        "1 of the 1 usable file(s) standardised by the statistics of all the training run's clips, not "
        "by their speaker's own: their speaker has fewer than 5 usable files here.")


def test_predict_notes_how_many_files_fell_back_to_the_training_run_s_statistics():
    # ann: a.wav (3 windows) and b.wav, 2 files; bob: c, d and e.wav, and silent.wav, which was rejected.
    windows = pd.DataFrame({"file": ["a.wav", "a.wav", "a.wav", "b.wav", "c.wav", "d.wav", "e.wav"],
                            "start_s": [0.0, 1.5, 3.0, 0.0, 0.0, 0.0, 0.0]})
    files = [Path(name) for name in ("a.wav", "b.wav", "c.wav", "d.wav", "e.wav", "silent.wav")]
    speakers = ["ann", "ann", "bob", "bob", "bob", "bob"]
    assert speaker_fallback_note(windows, files, speakers, 3) == (
        "2 of the 5 usable file(s) standardised by the statistics of all the training run's clips, not "
        "by their speaker's own: their speaker has fewer than 3 usable files here.")
    assert speaker_fallback_note(windows, files, speakers, 2) is None


def test_a_corpus_normalised_model_standardises_the_files_given_as_one_corpus(parameters):
    # No speakers needed; 6 files (at least min_clips) are their own corpus, 2 are too few.
    parameters["fusion_variants"] = {"mfcc_corpus": {"streams": ["mfcc"], "speaker_normalisation": "corpus"}}
    parameters["speaker_statistics"] = {"min_clips": 5}
    manifest = pd.DataFrame({"clip_id": [f"t{i}" for i in range(12)], "corpus": "acted", "speaker": None})
    trained = fuse_feature_streams(manifest, parameters["fusion_variants"]["mfcc_corpus"],
                                   parameters["block_weights"], parameters["block_scaling"],
                                   parameters["speaker_statistics"], parameters,
                                   stand_in_streams(manifest, level=20.0)[1])
    card = {"classes": ["angry", "sad"],
            "inputs": {"fusion.mfcc_corpus.fused_features": json.loads(json.dumps(trained.metadata))},
            "features": {"speaker_normalisation": trained.metadata["speaker_normalisation"]}}
    pipelines = stand_in_pipelines(parameters)
    model = StandIn()
    files = [Path(f"{name}.wav") for name in "abcdef"]
    _, windows, _ = predict_emotions(files, "mfcc_corpus", model, card, pipelines, parameters)
    np.testing.assert_allclose(model.seen.mean(axis=0), 0, atol=1e-5)  # the batch's own statistics
    np.testing.assert_allclose(model.seen.std(axis=0), 1, atol=1e-5)
    assert corpus_note(windows, 5).startswith("This model standardises features per corpus: the 6 usable "
                                              "files were standardised together, as one corpus.")
    _, windows, _ = predict_emotions(files[:2], "mfcc_corpus", model, card, pipelines, parameters)
    fallback = trained.metadata["speaker_normalisation"]["fallback"]
    raw = stand_in_streams(pd.DataFrame({"clip_id": ["a.wav", "b.wav"]}), level=1.0)[1].values
    np.testing.assert_allclose(model.seen, (raw - fallback["mean"]) / np.array(fallback["std"]), rtol=1e-4,
                               atol=1e-4)
    assert "2 usable file(s) are too few to stand for a corpus (fewer than 5)" in corpus_note(windows, 5)


class Fitted:
    """A stand-in for a trained model: all `load_trained_model` reads of it is its fit id."""

    def __init__(self, fit_id: str | None) -> None:
        self.fit_id_ = fit_id


def reads(*pairs):
    """A catalog's `load` that gives these (model, card) pairs one after another."""
    stored = iter(item for pair in pairs for item in pair)
    return lambda name: next(stored)


def test_a_model_and_card_of_different_runs_are_read_again_while_a_run_rewrites_them(tmp_path):
    lock = lock_path(tmp_path)
    said = []
    acquire(lock)  # a run holds the data folder
    try:
        model, card = load_trained_model(reads((Fitted("new"), {"fit_id": "old"}),
                                               (Fitted("new"), {"fit_id": "new"})),
                                         "mfcc", "svm", lock, say=said.append)
    finally:
        release(lock)
    assert (model.fit_id_, card["fit_id"]) == ("new", "new")
    assert len(said) == 1 and said[0].startswith("A run is rewriting the models (process ")
    with pytest.raises(ModelMismatchError, match="of different runs. Make it with `kedro run "
                                                 "--namespaces=modelling.mfcc.svm`"):
        load_trained_model(reads((Fitted("new"), {"fit_id": "old"})), "mfcc", "svm", lock)


def test_the_fit_id_follows_the_card_s_content_and_marks_the_model():
    first, second = Fitted(None), Fitted(None)
    card = stamp_fit_id(first, {"classes": ["a", "b"], "fold": 0})
    assert stamp_fit_id(second, {"classes": ["a", "b"], "fold": 0})["fit_id"] == card["fit_id"]
    assert first.fit_id_ == card["fit_id"]
    assert stamp_fit_id(Fitted(None), {"classes": ["a", "c"], "fold": 0})["fit_id"] != card["fit_id"]


def generated_batch_pipelines(parameters: dict, rows: dict[str, np.ndarray]) -> dict[str, Pipeline]:
    """The project's fusion wiring on one stand-in stream `mfcc` whose row for each file is given."""
    def stream(manifest: pd.DataFrame) -> tuple[ClipArray, ClipArray]:
        ids = manifest["clip_id"].astype(str).to_numpy()
        return (stand_in_streams(manifest, level=1.0)[0],
                ClipArray(ids, np.stack([rows[i] for i in ids]), dict(MFCC)))

    return {"data_processing": Pipeline([node(windows_of, "corpus_manifest",
                                              ["clip_manifest", "audio_rejections"])]),
            "feature_extraction": Pipeline([node(stream, "clip_manifest", ["log_mel_spectrogram", "mfcc"])]),
            "transfer_features": Pipeline([]), "fusion": fusion_pipeline(run_spec(parameters))}


@pytest.fixture
def acted_model(parameters) -> tuple[StandIn, dict, dict]:
    """A model of a variant as it is (`mfcc`), trained on a generated acted corpus and describing it,
    its card, and the parameters."""
    from tests.pipelines.modelling.test_domain import OPTIONS, generated_corpus

    parameters["fusion_variants"] = {"mfcc": ["mfcc"]}
    manifest, training = generated_corpus("acted")
    _, validation = generated_corpus("acted", speakers=4, seed=1)
    trained = fuse_feature_streams(manifest, ["mfcc"], parameters["block_weights"],
                                   parameters["block_scaling"], parameters["speaker_statistics"], parameters,
                                   ClipArray(manifest["clip_id"].to_numpy(), training, dict(MFCC)))
    model = StandIn()
    model.domain_ = describe_domain(trained.metadata, training, manifest["corpus"], validation, OPTIONS)
    card = {"classes": ["angry", "sad"], "features": json.loads(json.dumps(trained.metadata))}
    return model, card, parameters


def predicted(model: StandIn, card: dict, parameters: dict, batch: np.ndarray, **options) -> tuple[
        pd.DataFrame, list[str]]:
    """predict_emotions on files whose features are the rows of `batch`, and what it said."""
    files = [Path(f"f{i}.wav") for i in range(len(batch))]
    said: list[str] = []
    pipelines = generated_batch_pipelines(parameters, dict(zip(map(str, files), batch, strict=True)))
    table, _, _ = predict_emotions(files, "mfcc", model, card, pipelines, parameters, say=said.append,
                                   **options)
    return table, said


def test_same_domain_puts_a_batch_of_other_recordings_on_the_training_scale_and_flags_it_otherwise(
        acted_model):
    from tests.pipelines.modelling.test_domain import generated_corpus

    model, card, parameters = acted_model
    _, louder = generated_corpus("other", speakers=3, gain_db=20.0, seed=5)  # 72 files, mixed emotions
    table, said = predicted(model, card, parameters, louder)
    assert not table["in_domain"].any() and said[-1].startswith("72 of the 72 usable file(s) out of this")
    np.testing.assert_allclose(model.seen, louder, rtol=1e-5)  # as they are, without --same-domain

    table, said = predicted(model, card, parameters, louder, same_domain=True)
    np.testing.assert_allclose(model.seen.mean(axis=0), model.domain_.mean_, atol=1e-3)
    np.testing.assert_allclose(model.seen.std(axis=0), model.domain_.std_, rtol=1e-3)
    assert table["in_domain"].mean() > 0.8
    assert not any(line.startswith("The files vary far less") for line in said)  # it mixes emotions
    with pytest.raises(DomainBatchError, match="19 usable file"):  # domain_statistics.min_files: 20
        predicted(model, card, parameters, louder[:19], same_domain=True)


def test_a_batch_of_one_emotion_is_warned_of_by_its_spread_and_by_its_answers(acted_model):
    from tests.pipelines.modelling.test_domain import generated_corpus

    model, card, parameters = acted_model
    _, angry = generated_corpus("other", speakers=3, clips=8, gain_db=20.0, emotions=("angry",), seed=5)
    _, said = predicted(model, card, parameters, angry, same_domain=True)
    assert any(line.startswith("The files vary far less than the training corpora do") for line in said)
    # Every file gets one answer (the stand-in's): said too, with or without --same-domain.
    assert any(line.startswith("24 of the 24 files (100%) got one emotion, sad") for line in said)
    # A model standardised per speaker refuses --same-domain before anything is made.
    with pytest.raises(DomainBatchError, match="give --same-speaker"):
        predict_emotions([Path("a.wav")], "mfcc_spk", TrainedOnSpeakers(), CARD, pipelines={}, parameters={},
                         speakers=["x"], same_domain=True)


def made_with_of(parameters: dict) -> dict[str, dict]:
    """What a training run with these parameters recorded of a late fusion's two inputs (`made_with`),
    beside facts of that run (a time, a device, a version, a digest)."""
    audio = {"audio": dict(parameters["audio"])}
    facts = {"seconds": 12.5, "device": "GPU", "versions": {"numpy": "1.0"}, "fingerprint": "abc"}
    return {"log_mel_spectrogram": {**facts, "made_with": {
                **audio, "log_mel_spectrogram": dict(parameters["log_mel_spectrogram"])}},
            "fusion.mfcc.fused_features": {**facts, "made_with": {
                **audio, "mfcc": dict(parameters["mfcc"]), "fusion_variant": ["mfcc"],
                "block_scaling": parameters["block_scaling"],
                "block_weights.mfcc": parameters["block_weights"]["mfcc"]}}}


def test_predict_refuses_a_model_whose_inputs_were_made_with_other_settings_in_one_message(parameters):
    parameters["fusion_variants"] = {"mfcc": ["mfcc"]}
    card = {"classes": ["angry", "sad"], "inputs": made_with_of(parameters), "features": {}}
    now = {**parameters, "audio": {**parameters["audio"], "normalise": "rms"},
           "mfcc": {**parameters["mfcc"], "n_mfcc": 20}, "fusion_variants": {"mfcc": ["mfcc", "lpcc"]}}
    # Refused before any file is read (no pipeline is needed to get there), each difference once, in
    # the order of the record: the audio's, the stream's, the variant's.
    with pytest.raises(ModelMismatchError) as refused:
        predict_emotions([Path("a.wav")], "mfcc_late", StandIn(), card, pipelines={}, parameters=now)
    assert str(refused.value) == (
        "this mfcc_late model was trained on features made with other settings than the project has now:\n"
        f"  audio.normalise: {parameters['audio']['normalise']} when trained, rms now\n"
        "  mfcc.n_mfcc: 40 when trained, 20 now\n"
        "  fusion_variant: [\"mfcc\"] when trained, [\"mfcc\", \"lpcc\"] now\n"
        "Restore those settings, or train again with these (`kedro run`).")


def test_a_fact_of_a_run_or_predict_s_own_windowing_is_never_a_difference(parameters):
    parameters["fusion_variants"] = {"mfcc": ["mfcc"]}
    trained = made_with_of(parameters)
    for metadata in trained.values():  # trained on cropped clips; predict cuts windows whatever
        metadata["made_with"]["audio"] |= {"long_clips": "crop", "window_hop_s": 1.5}
    now = {**parameters, "audio": {**parameters["audio"], "long_clips": "windows", "window_hop_s": 0.5},
           "transfer_features": {**parameters["transfer_features"], "batch_size": 1}}
    assert setting_differences(trained, now) == []


def test_a_model_whose_card_does_not_say_what_its_inputs_were_made_with_is_refused(parameters):
    card = {"classes": ["angry", "sad"], "features": {"feature": "fused_features", "blocks": []}}
    with pytest.raises(ModelMismatchError, match="does not say what its input.s. fusion.mfcc.fused_features "
                                                 "were made with .* train it again"):
        predict_emotions([Path("a.wav")], "mfcc", StandIn(), card, pipelines={}, parameters=parameters)


def test_features_made_by_the_offline_fallback_cnn_are_refused_though_the_settings_are_the_same(parameters):
    # Which CNN made a transfer stream is what the machine allowed, not a setting: checked on the features.
    parameters["fusion_variants"] = {"cnn": ["transfer_features"]}

    def made_by(backbone: str):
        return lambda manifest: ClipArray(manifest["clip_id"].astype(str).to_numpy(),
                                          np.zeros((len(manifest), 2), np.float32), {"backbone": backbone})

    manifest = pd.DataFrame({"clip_id": ["t1", "t2"]})
    trained = fuse_feature_streams(manifest, ["transfer_features"], parameters["block_weights"],
                                   parameters["block_scaling"], parameters["speaker_statistics"], parameters,
                                   made_by("inception_resnet_v2")(manifest))
    card = {"classes": ["angry", "sad"], "features": json.loads(json.dumps(trained.metadata))}
    pipelines = {"data_processing": Pipeline([node(windows_of, "corpus_manifest",
                                                   ["clip_manifest", "audio_rejections"])]),
                 "feature_extraction": Pipeline([]),
                 "transfer_features": Pipeline([node(made_by("squeezenet_v1_1"), "clip_manifest",
                                                     "transfer_features")]),
                 "fusion": fusion_pipeline(run_spec(parameters))}
    refusal = "transfer_features were made by CNN 'inception_resnet_v2' in training and by 'squeezenet_v1_1'"
    with pytest.raises(ModelMismatchError, match=refusal):
        predict_emotions([Path("a.wav")], "cnn", StandIn(), card, pipelines, parameters)
    pipelines["transfer_features"] = Pipeline([node(made_by("inception_resnet_v2"), "clip_manifest",
                                                    "transfer_features")])
    table, _, _ = predict_emotions([Path("a.wav")], "cnn", StandIn(), card, pipelines, parameters)
    assert list(table["file"]) == ["a.wav"]
