"""Emotions of new recordings from a trained model.

The new files go through the project's own pipelines, the same nodes and wiring that made the
training features (data_processing from the manifest on, feature_extraction, transfer_features and
the model's fusion variant, or the spectrograms a fine-tuned network reads), on an in-memory
catalog. First, what the model's inputs were made with (their `made_with` in the model card, from
the audio preprocessing to the CNN) is compared with the project's parameters, by the rule of every
stored input (`emofusion.provenance`): a model trained on features made differently is refused
rather than fed features it has never seen. A model trained on
features standardised per speaker needs the speaker of each file, and is refused without it."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import DataCatalog, DatasetError, MemoryDataset
from kedro.pipeline import Pipeline, pipeline
from kedro.runner import SequentialRunner

from emofusion.clip_array import ClipArray
from emofusion.datasets import JoinedPartsMemoryDataset
from emofusion.errors import DomainBatchError, ModelMismatchError, SpeakersNeededError
from emofusion.instances import dotted_dataset_names, fused_features_name, model_dataset
from emofusion.learning.predictions import prediction_table
from emofusion.learning.selection import model_rank
from emofusion.pipelines.data_processing.corpora import CLIP_COLUMNS
from emofusion.provenance import made_with_differences, shown
from emofusion.run_lock import describe, holder_of
from emofusion.standardisation import standardise_by_speaker

# How long `emofusion predict` waits for a run to finish writing the model it asked for.
MODEL_WAIT_S = 120.0


def load_trained_model(load: Callable[[str], Any], variant: str, classifier: str, lock: Path,
                       wait_s: float = MODEL_WAIT_S, say: Callable[[str], None] = print
                       ) -> tuple[Any, dict[str, Any]]:
    """A trained model and its card, read as one pair. A run that holds the data folder (`lock`)
    may be rewriting them: a file caught mid-write, or a model and card of different runs (their
    `fit_id`s differ), are read again until the run has written both, for at most `wait_s`."""
    deadline = time.monotonic() + wait_s
    waiting = False
    while True:
        try:
            model = load(model_dataset(variant, classifier, "trained_model"))
            model_card = load(model_dataset(variant, classifier, "model_card"))
            problem = ("has a trained model and a model card of different runs"
                       if getattr(model, "fit_id_", None) != model_card.get("fit_id") else None)
        except DatasetError as error:
            problem = f"is incomplete or missing ({str(error).splitlines()[0]})"
        if problem is None:
            return model, model_card
        holder = holder_of(lock)
        if holder is None or time.monotonic() > deadline:
            raise ModelMismatchError(
                f"model '{variant}.{classifier}' {problem}. Make it with `kedro run "
                f"--namespaces=modelling.{variant}.{classifier}` (or `kedro run --pipelines=modelling`)"
                + (f"; the run rewriting it ({describe(holder)}) did not finish it in {wait_s:.0f} s"
                   if holder else ""))
        if not waiting:
            say(f"A run is rewriting the models ({describe(holder)}); waiting for model "
                f"'{variant}.{classifier}' to be whole.")
            waiting = True
        time.sleep(0.5)


# How long recordings are cut: predict cuts them into windows whatever the training run did, each
# window made as a training clip is, so these recorded settings are predict's own, not the model's.
WINDOWING = frozenset({"audio.long_clips", "audio.window_hop_s"})


def default_model(summary: pd.DataFrame, without_speakers: set[str] | None) -> str:
    """The model `emofusion predict` and the logged MLflow model use unless told otherwise: the first
    by validation UAR, ties to fewer streams, then to the name (`model_rank`: the test clips' scores
    choose nothing), among those that need no speakers when `without_speakers` names
    (`variant.classifier`) the models that do."""

    if without_speakers is not None:
        usable = ~(summary["variant"] + "." + summary["classifier"]).isin(without_speakers)
        if usable.any():
            summary = summary[usable]
    best = model_rank(summary).idxmin()
    return f"{summary['variant'].loc[best]}.{summary['classifier'].loc[best]}"


def setting_differences(trained: Mapping[str, Any], parameters: Mapping[str, Any]) -> list[str]:
    """Each setting that a model's inputs (`trained`: dataset -> its metadata in the model card) were
    made with and that the project's `parameters` now hold otherwise, once, as 'path: value when
    trained, value now'. The rule of every stored input (`made_with_differences`): only the recorded
    settings count, so a fact of a run (a time, a device, a version) never does. A fused input's
    `fusion_variant` is its entry of `fusion_variants`."""
    variants = {fused_features_name(variant): spec
                for variant, spec in (parameters.get("fusion_variants") or {}).items()}
    differences = [f"{path}: {shown(made)} when trained, {shown(now)} now"
                   for name, metadata in trained.items()
                   for path, made, now in made_with_differences(
                       metadata["made_with"],
                       {**parameters, "fusion_variant": variants[name]} if name in variants else parameters)
                   if path not in WINDOWING]
    return list(dict.fromkeys(differences))  # a late fusion's inputs share the audio's settings


def _parameter(parameters: Mapping[str, Any], name: str) -> Any:
    """A node's parameter input: `params:a.b`, or `parameters`, all of them."""
    if name == "parameters":
        return parameters
    value: Any = parameters
    for key in name.removeprefix("params:").split("."):
        value = value[key]
    return value


def features_of(files: Sequence[Path], datasets: Sequence[str], pipelines: Mapping[str, Pipeline],
                parameters: Mapping[str, Any], speakers: Sequence[str] | None = None,
                speaker_fallbacks: Mapping[str, Mapping[str, Any]] | None = None, hop_s: float | None = None
                ) -> tuple[dict[str, ClipArray], pd.DataFrame, pd.DataFrame]:
    """These files' features as the named datasets (`fusion.<variant>.fused_features`,
    `log_mel_spectrogram`...), one row per window of `audio.duration_s` every `hop_s` seconds
    (default `audio.window_hop_s`); which file and start each row is (`clip_id`, `file`,
    `start_s`); and the files rejected (silent, unreadable, too short) with the reason, through the
    project's feature `pipelines` (`RunSpec.feature_pipelines`). No features when every file was
    rejected. `speakers` (one per file) and the training run's fallback statistics of each dataset
    standardised per speaker (`speaker_fallbacks`: dataset -> {mean, std}) serve features
    standardised per speaker: a file's windows are its speaker's, and a speaker with too few files is
    standardised as in training."""
    audio = dict(parameters["audio"], long_clips="windows")
    audio["window_hop_s"] = float(hop_s or audio.get("window_hop_s") or audio["duration_s"])
    parameters = {**parameters, "audio": audio}
    steps = sum(pipelines.values(), Pipeline([]))
    steps = steps.from_inputs("corpus_manifest").to_outputs(*datasets, "audio_rejections")
    steps, fallbacks = _with_own_fallbacks(steps, parameters, speaker_fallbacks or {})
    preprocessing = steps.to_outputs("clip_manifest", "audio_rejections")
    names = [str(f) for f in files]
    manifest = pd.DataFrame({"clip_id": names, "corpus": "new", "path": names,
                             "speaker": speakers}).reindex(columns=CLIP_COLUMNS)
    catalog = DataCatalog({"corpus_manifest": MemoryDataset(manifest),
                           "stored_transfer_features": MemoryDataset(None)})
    for name in steps.inputs() - {"corpus_manifest", "stored_transfer_features"}:
        catalog[name] = fallbacks[name] if name in fallbacks else _parameter(parameters, name)
    for name in (name for step in steps.nodes if inspect.isgeneratorfunction(step.func)
                 for name in step.outputs):
        catalog[name] = JoinedPartsMemoryDataset()  # preprocess_audio and log-mel outputs: in parts
    runner = SequentialRunner()
    runner.run(preprocessing, catalog)  # first, so that features are made only when a file is usable
    rejected = catalog["audio_rejections"].load()
    windows = catalog["clip_manifest"].load()
    windows = pd.DataFrame({"clip_id": windows["clip_id"].astype(str), "file": windows["source_clip_id"],
                            "start_s": windows["window_start_s"]})
    if windows.empty:  # every file was rejected: nothing to make features of
        return {}, windows, rejected
    for name in datasets:  # kept, though a later step may read one (a network's spectrograms, by the CNN)
        catalog[name] = KeptDataset()
    runner.run(steps - preprocessing, catalog)
    return {name: catalog[name].load() for name in datasets}, windows, rejected


def _with_own_fallbacks(steps: Pipeline, parameters: Mapping[str, Any],
                        speaker_fallbacks: Mapping[str, Mapping[str, Any]]
                        ) -> tuple[Pipeline, dict[str, dict[str, Any]]]:
    """The steps with the node that makes each dataset of `speaker_fallbacks` reading its own
    `speaker_statistics`, with that dataset's fallback statistics from training, under a parameter
    name of its own: a late fusion may read two inputs standardised per speaker, each with the
    fallback statistics of its own features. Returns the steps and those parameters by name."""
    fallbacks = {}
    for dataset, fallback in speaker_fallbacks.items():
        maker = steps.only_nodes_with_outputs(dataset)
        name = f"params:speaker_statistics_of.{dataset}"
        with dotted_dataset_names():
            steps = steps - maker + pipeline(maker, parameters={"params:speaker_statistics": name})
        fallbacks[name] = dict(parameters["speaker_statistics"], fallback=fallback)
    return steps, fallbacks


class KeptDataset(JoinedPartsMemoryDataset):
    """A feature that predict asked for, kept when the runner would release it: a runner frees each
    in-memory dataset after the last step that reads it, so a requested dataset that another
    requested one is made from (the spectrograms of a fine-tuned network, which the CNN features of a
    fused variant are made from too) would be gone before it could be returned. Made in parts, as
    the spectrograms are, it is joined."""

    def _release(self) -> None:
        pass


def model_inputs(variant: str, model_card: Mapping[str, Any]) -> dict[str, Any]:
    """The datasets a model reads, with the metadata they had in training: those its card names
    (fine-tuned networks and their late fusion), else its fusion variant's features."""
    return dict(model_card.get("inputs") or {fused_features_name(variant): model_card["features"]})


def _per_file(windows: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """One row per file from its windows' predictions: the mean of their probabilities and its most
    likely emotion, or without probabilities the emotion most windows have; in the model's domain
    when at least half its windows are."""
    probabilities = [f"p_{label}" for label in classes]
    grouped = windows.groupby("file", sort=False)
    if set(probabilities) <= set(windows.columns):
        table = grouped[probabilities].mean()
        table.insert(0, "emotion", np.asarray(classes)[table.to_numpy().argmax(axis=1)])
    else:
        table = grouped["emotion"].agg(lambda emotions: emotions.mode().iloc[0]).to_frame()
    table.insert(1, "windows", grouped.size())
    if "in_domain" in windows:
        table.insert(2, "in_domain", grouped["in_domain"].mean() >= 0.5)
    return table.reset_index()


def as_one_domain(values: np.ndarray, files: Sequence[str], domain: Any, min_files: int
                  ) -> tuple[np.ndarray, float]:
    """`--same-domain` for a model whose features are not standardised per corpus: the rows (windows
    of `files`) standardised by the batch's own statistics (`standardise_by_speaker` with the batch as
    one group, the windows of a file counting once), then put on the scale of the model's training
    clips (`domain`'s `mean_` and `std_`), where a training corpus's clips were. Returns them and the
    batch's spread against the training clips'."""
    standardised = np.array(values, dtype=np.float64)
    _, counts = standardise_by_speaker(standardised, ["batch"] * len(standardised), min_files,
                                       {"mean": domain.mean_, "std": domain.std_}, sources=files)
    return (standardised * domain.std_ + domain.mean_).astype(np.float32), counts["spread"]["batch"]


def one_emotion_notes(spread: float | None, reference: Mapping[str, float], table: pd.DataFrame,
                      options: Mapping[str, Any]) -> list[str]:
    """Warnings that a batch may be of one emotion: its `spread` (`relative_spread` of the batch
    standardised by its own statistics) far below that of every training corpus (`reference`), or
    most files given one emotion (`options`: `domain_statistics`). Standardising a batch of one
    emotion by its own statistics removes what marks that emotion; without it, a model that does not
    carry over to the recordings often gives one answer too."""
    notes = []
    if spread is not None and reference and spread < options["min_spread"] * min(reference.values()):
        least = min(reference.values())
        notes.append(f"The files vary far less than the training corpora do (spread {spread:.2f} of the "
                     f"training clips', against {least:.2f} for the least varied training corpus): they look "
                     "like recordings of one emotion, which standardising them by their own statistics "
                     "removes. Give a batch that mixes emotions.")
    counts = table["emotion"].value_counts()
    if len(table) >= options["min_files"] and counts.iloc[0] >= options["max_answer_share"] * len(table):
        top = counts.iloc[0]
        notes.append(f"{top} of the {len(table)} files ({100 * top / len(table):.0f}%) got one emotion, "
                     f"{counts.index[0]}: either they are of one emotion (standardising them "
                     "by their own statistics then removes it) or the model does not carry over to them "
                     "(see in_domain).")
    return notes


def domain_note(table: pd.DataFrame, model: Any) -> str:
    """The line on stderr that says how many files fell outside the model's domain (`in_domain`)."""
    domain = getattr(model, "domain_", None)
    if domain is None or "in_domain" not in table:
        return ("This model keeps no description of its training clips (a fine-tuned network, or a model "
                "trained before EmoFusion described them: run `kedro run` again): no in_domain column.")
    flagged = int((~table["in_domain"].astype(bool)).sum())
    return (f"{flagged} of the {len(table)} usable file(s) out of this model's domain (in_domain false): "
            f"farther from its training clips than {100 * domain.pass_share:.0f}% of its held-out clips are, "
            "so its answers for them are less trustworthy.")


def predict_emotions(files: Sequence[Path], variant: str, model: Any, model_card: Mapping[str, Any],
                     pipelines: Mapping[str, Pipeline], parameters: Mapping[str, Any],
                     speakers: Sequence[str] | None = None, hop_s: float | None = None,
                     same_domain: bool = False, say: Callable[[str], None] = lambda line: None
                     ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One row per usable file: its predicted emotion, how many windows it was cut into, whether it
    lies in the model's domain (`in_domain`, for a model that describes its training clips) and
    the probability of each emotion averaged over them; the same per window (with `start_s`); and
    the rejected files with the reason. A model of one input takes that input's rows; a model of
    several (late fusion of a network and a fusion variant) takes them by dataset name.
    `speakers`, one per file, is needed by a model trained on features standardised per speaker
    (its card's `features.speaker_normalisation`): each file is standardised by the statistics of
    the files of its speaker, as in training, and a speaker with too few files by the fallback
    statistics each input recorded in training. `same_domain`: the files are one domain, standardised
    by their own statistics (`as_one_domain`; a model standardised per corpus always does so), at
    least `domain_statistics.min_files` of them. Warnings (a batch that looks like one emotion, how
    many files are out of the model's domain) go to `say`."""
    normalisation = _normalisation(variant, model, model_card, speakers)
    by = normalisation.get("by", "speaker") if normalisation else None
    trained = model_inputs(variant, model_card)
    domain = getattr(model, "domain_", None)
    if same_domain:
        _check_same_domain(variant, by, list(trained), domain)
    _check_same_settings(variant, trained, parameters)
    fallbacks = {name: metadata["speaker_normalisation"]["fallback"] for name, metadata in trained.items()
                 if isinstance(metadata, Mapping) and metadata.get("speaker_normalisation")}
    features, windows, rejected = features_of(files, list(trained), pipelines, parameters, speakers,
                                              fallbacks, hop_s)
    if not features or len(next(iter(features.values())).clip_ids) == 0:
        empty = pd.DataFrame(columns=["file", "emotion"])
        return empty, empty, rejected
    clip_ids = next(iter(features.values())).clip_ids
    _check_same_backbones(variant, trained, features)
    values = {name: array.select(list(clip_ids)).values for name, array in features.items()}
    X = values if "inputs" in model_card and len(values) > 1 else next(iter(values.values()))
    windows = windows.set_index("clip_id").loc[clip_ids]
    options = parameters["domain_statistics"]
    if same_domain and windows["file"].nunique() < options["min_files"]:
        raise DomainBatchError(
            f"--same-domain standardises the files by their own statistics: {windows['file'].nunique()} "
            f"usable file(s) are too few to stand for a domain (domain_statistics.min_files: "
            f"{options['min_files']}). Give more files of the same recording set, or leave --same-domain "
            "out.")
    spread, reference = None, {}
    if by == "corpus":  # standardised by fusion, the batch as one corpus "new", unless too few
        spread = (next(iter(features.values())).metadata["speaker_normalisation"]["clip_counts"]
                  .get("spread", {}).get("new"))
        reference = normalisation.get("clip_counts", {}).get("spread", {})
    elif same_domain:
        X, spread = as_one_domain(X, windows["file"].to_numpy(), domain, options["min_files"])
        reference = domain.corpus_spread_
    windows = prediction_table(model, X, windows, column="emotion")
    if domain is not None and not isinstance(X, dict):
        windows.insert(windows.columns.get_loc("emotion") + 1, "in_domain", domain.in_domain(X))
    table = _per_file(windows, list(map(str, model.classes_)))
    for note in [*one_emotion_notes(spread, reference, table, options), domain_note(table, model)]:
        say(note)
    return table, windows, rejected


def _normalisation(variant: str, model: Any, model_card: Mapping[str, Any], speakers: Sequence[str] | None
                   ) -> Mapping[str, Any] | None:
    """The model card's record of how its features were standardised per speaker or corpus (None
    when they were not), once the card is known to be the model's and the speakers are given if
    the model needs them."""
    if list(map(str, model.classes_)) != list(model_card["classes"]):
        raise ModelMismatchError("the model and its model card name different emotions: they come from "
                                 "different runs; run `kedro run --pipelines=modelling` again")
    card_features = model_card.get("features")
    normalisation = card_features.get("speaker_normalisation") if isinstance(card_features, Mapping) else None
    if normalisation and normalisation.get("by", "speaker") == "speaker" and speakers is None:
        raise SpeakersNeededError(
            f"this {variant} model was trained on features standardised per speaker (speaker_normalisation: "
            "speaker), so it needs to know who speaks in each file: give --same-speaker when all the files "
            "are one speaker's, or --speakers FILE.csv with columns path and speaker. Each speaker's files "
            f"are standardised together; a speaker with fewer than {normalisation['min_clips']} files by the "
            "statistics of all the training run's clips, which fit their voice less well.")
    return normalisation


def _check_same_settings(variant: str, trained: Mapping[str, Any], parameters: Mapping[str, Any]) -> None:
    """Refuse a model whose inputs were made with other settings than the project's `parameters`
    (`setting_differences`), or whose card does not say what they were made with."""
    unrecorded = [name for name, metadata in trained.items()
                  if not isinstance(metadata, Mapping) or "made_with" not in metadata]
    if unrecorded:
        raise ModelMismatchError(
            f"this {variant} model's card does not say what its input(s) {', '.join(unrecorded)} were made "
            "with (it was trained before EmoFusion recorded it), so they cannot be made again alike: train "
            "it again (`kedro run`).")
    differences = setting_differences(trained, parameters)
    if differences:
        raise ModelMismatchError(
            f"this {variant} model was trained on features made with other settings than the project "
            "has now:\n  " + "\n  ".join(differences[:20]) + "\nRestore those settings, or train again "
            "with these (`kedro run`).")


def _backbones(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The CNN each transfer stream of a fused input was made by: the configured one, or the offline
    fallback that the transfer step takes when the ImageNet weights cannot be had. That is what the
    machine allowed, not a setting, so `made_with` does not say it."""
    return {block["stream"]: block["source"]["backbone"] for block in metadata.get("blocks") or []
            if isinstance(block.get("source"), Mapping) and "backbone" in block["source"]}


def _check_same_backbones(variant: str, trained: Mapping[str, Any], features: Mapping[str, ClipArray]
                          ) -> None:
    """Refuse features made by another CNN than the model's, the same settings notwithstanding."""
    for name, metadata in trained.items():
        now = _backbones(features[name].metadata)
        for stream, backbone in _backbones(metadata).items():
            if now.get(stream, backbone) != backbone:
                raise ModelMismatchError(
                    f"this {variant} model's {stream} were made by CNN '{backbone}' in training and by "
                    f"'{now[stream]}' now: the ImageNet weights of one of them could not be had, so the "
                    "transfer step took its offline fallback (transfer_features.offline_fallback). Make "
                    "the weights reachable, or train again.")


def _check_same_domain(variant: str, by: str | None, inputs: Sequence[str], domain: Any) -> None:
    """Refuse `--same-domain` for a model it cannot serve, saying what to do instead."""
    if by == "speaker":
        raise DomainBatchError(
            f"this {variant} model standardises features per speaker: give --same-speaker (all the files one "
            "speaker's, standardised together) or --speakers FILE.csv instead of --same-domain")
    if len(inputs) > 1:
        raise DomainBatchError(f"--same-domain standardises the features of one fusion variant; this model "
                               f"reads {', '.join(inputs)}: leave --same-domain out")
    if by is None and domain is None:
        raise DomainBatchError(
            f"this {variant} model keeps no statistics of its training clips to put the files on their scale "
            "(a fine-tuned network, or a model trained before EmoFusion kept them: run `kedro run` again)")
