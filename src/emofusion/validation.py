"""Every setting checked once, before anything runs: a run that would fail in its tenth minute on a
mistyped option, or train with a negative block weight, fails in its first second instead, naming the
parameter and what it may be. `--params` overrides are part of the parameters checked.

Settings with a fixed shape are a pydantic schema; the fusion variants, classifiers and backbones
are checked by the functions their pipelines build from, so the rules live in one place each."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emofusion.engine import DEFAULT_CHUNK_CLIPS
from emofusion.errors import CorpusError, ParameterError, SplitConfigError
from emofusion.imagenet.config import transfer_settings
from emofusion.learning.splits import fold_files  # the pipelines' imports: only when used
from emofusion.pipelines.data_processing.corpora import READERS, compile_speaker_pattern
from emofusion.registry import feature_streams
from emofusion.run_spec import run_spec

DEFAULT_DEMO_PATH = "data/01_raw/demo"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CorpusSource(_Strict):
    """One entry of `corpus_sources`: its reader (naming scheme), folder or CSV, and options."""

    reader: str
    path: str
    sample_fraction: float = Field(default=1.0, gt=0, le=1)
    label_map: dict[str, str] | None = None
    speaker_pattern: str | None = None  # folder and csv readers; checked with the corpora

    @field_validator("reader")
    @classmethod
    def _known_reader(cls, reader: str) -> str:
        if reader not in READERS:
            raise ValueError(f"unknown reader '{reader}'; choose one of {sorted(READERS)}")
        return reader


class Audio(_Strict):
    sample_rate: int = Field(gt=0)
    silence_threshold_db: float = Field(le=0)
    trim_top_db: float = Field(gt=0)
    trim_frame_ms: float = Field(gt=0)
    min_duration_s: float = Field(ge=0)
    normalise: Literal["peak", "rms"]
    level_db: float = Field(le=0)
    duration_s: float = Field(gt=0)
    crop: Literal["start", "centre", "end"]
    pad: Literal["end", "centre"]
    long_clips: Literal["crop", "windows"] = "crop"
    window_hop_s: float = Field(default=1.5, gt=0)


Statistic = Literal["mean", "std", "min", "max", "median"]


class _Frames(_Strict):
    window: str
    window_ms: float = Field(gt=0)
    hop_ms: float = Field(gt=0)


class Mfcc(_Frames):
    n_mfcc: int = Field(gt=0)
    n_mels: int = Field(gt=0)
    statistics: list[Statistic] = Field(min_length=1)
    active_frame_top_db: float | None = Field(default=None, gt=0)


class Lpcc(_Frames):
    order: int = Field(gt=0)
    n_ceps: int = Field(gt=0)
    pre_emphasis: float = Field(ge=0, lt=1)
    statistics: list[Statistic] = Field(min_length=1)
    active_frame_top_db: float | None = Field(default=None, gt=0)


class LogMel(_Frames):
    n_mels: int = Field(gt=0)
    top_db: float = Field(gt=0)
    dtype: Literal["float16", "float32"]


class Split(_Strict):
    strategy: Literal["random", "speaker_independent", "leave_one_speaker_out", "folds_file", "cross_corpus",
                      "leave_one_corpus_out"]
    test_size: float = Field(gt=0, lt=1)
    validation_size: float = Field(gt=0, lt=1)
    speaker_folds: int = Field(ge=3)
    repeats: int = Field(default=1, ge=1)
    folds_dir: str | None = None
    folds_pattern: str | None = None
    train_corpora: list[str] = Field(default_factory=list)
    test_corpora: list[str] = Field(default_factory=list)


class Layer(_Strict):
    units: int = Field(gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)


class ClassifierNumbers(BaseModel):
    """The numbers of a classifier entry; which options a kind takes is `build_classifier`'s check."""

    model_config = ConfigDict(extra="allow")
    kind: str  # a kind of registry.classifier_kinds
    C: float | None = Field(default=None, gt=0)
    kernel: Literal["rbf", "linear"] | None = None
    gamma: Literal["scale"] | float | None = None
    exact_kernel_max_clips: int | None = Field(default=None, ge=0)
    approximate_components: int | None = Field(default=None, ge=1)
    kernel_matrix_min_columns: int | None = Field(default=None, ge=0)
    layers: list[Layer] | None = None
    learning_rate: float | None = Field(default=None, gt=0)
    epochs: int | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0)
    patience: int | None = Field(default=None, ge=0)
    early_stopping_fraction: float | None = Field(default=None, gt=0, lt=1)


class Evaluation(_Strict):
    bootstrap_resamples: int = Field(ge=100)
    confidence: float = Field(gt=0.5, lt=1)


class OutOfDomain(_Strict):
    pass_share: float = Field(gt=0.5, lt=1)
    components: int = Field(ge=1)


class DomainStatistics(_Strict):
    min_files: int = Field(ge=2)
    min_spread: float = Field(gt=0, lt=1)
    max_answer_share: float = Field(gt=0, le=1)


class Tracking(_Strict):
    """Whether a run is recorded in MLflow, what if the server is down, and which model is logged."""

    enabled: bool = True
    unreachable: Literal["continue", "stop"] = "continue"
    model: str | None = "chosen"


MEMORY_SIZE = r"(?i)^\s*\d+(\.\d+)?(e\d+)?\s*([kMGT]i?B|B)?\s*$"


class Execution(_Strict):
    """Where the per-clip stages run (emofusion.engine)."""

    engine: Literal["local", "dask"] = "local"
    scheduler_address: str | None = Field(default=None, min_length=1)
    chunk_clips: int = Field(default=DEFAULT_CHUNK_CLIPS, gt=0)
    workers: int | None = Field(default=None, gt=0)
    # Dask's own notation, as LocalCluster's memory_limit takes it: 4GiB, 512MB, 2e9.
    worker_memory: str | None = Field(default=None, pattern=MEMORY_SIZE)

    @model_validator(mode="after")
    def _workers_only_for_a_cluster_started_here(self) -> Execution:
        sized = self.workers is not None or self.worker_memory is not None
        if self.scheduler_address is not None and sized:
            raise ValueError("workers and worker_memory size a cluster started on this machine; a cluster "
                             "joined at scheduler_address has its own, so leave them null")
        return self


class Parameters(BaseModel):
    model_config = ConfigDict(extra="allow")
    random_seed: int
    n_jobs: int
    corpus_sources: dict[str, CorpusSource | None]
    resume: bool = True
    audio: Audio
    mfcc: Mfcc
    lpcc: Lpcc
    log_mel_spectrogram: LogMel
    split: Split
    evaluation: Evaluation
    block_weights: dict[str, Annotated[float, Field(ge=0)]] = Field(min_length=1)
    block_scaling: Literal["balanced", "standard"]
    speaker_statistics: dict[str, int] = Field(default_factory=dict)
    domain_statistics: DomainStatistics
    out_of_domain: OutOfDomain
    classifiers: dict[str, ClassifierNumbers | None]
    tracking: Tracking = Tracking()
    execution: Execution = Execution()


def _schema_errors(parameters: Mapping[str, Any]) -> list[str]:
    try:
        Parameters.model_validate(dict(parameters))
    except ValidationError as error:
        return [_schema_error(problem) for problem in error.errors(include_url=False)]
    return []


def _schema_error(problem: Mapping[str, Any]) -> str:
    """One line a user can act on. A missing setting's pydantic "input" is the whole section around
    it, thousands of characters; it is missing mostly from a conf/base copied from an older version."""
    where = ".".join(map(str, problem["loc"]))
    if problem["type"] == "missing":
        return (f"{where}: not set (this version of EmoFusion needs it: a conf/base copied from an older "
                "version lacks it; take it from the project's conf/base)")
    return f"{where}: {problem['msg']} (got {problem['input']!r})"


def _rule_errors(parameters: Mapping[str, Any], project_path: Path) -> list[str]:
    """The checks of the functions the pipelines are built from, and the rules no schema states."""

    errors = _split_errors(Split.model_validate(parameters["split"]), parameters["corpora"], project_path)
    for check in (lambda: run_spec(parameters), lambda: _block_weight_errors(parameters),
                  lambda: transfer_settings(parameters["transfer_features"], parameters["backbones"],
                                            parameters["random_seed"])):
        try:
            check()
        except (ValueError, KeyError, TypeError) as error:
            errors.append(str(error).strip("'\""))
    errors += _corpus_errors(parameters, project_path)
    if not errors:  # the model names below come from settings checked above
        errors += _tracking_errors(Tracking.model_validate(parameters.get("tracking") or {}), parameters)
    return errors


def _block_weight_errors(parameters: Mapping[str, Any]) -> None:
    known = feature_streams(parameters)
    unknown = sorted(set(parameters["block_weights"]) - set(known))
    if unknown:
        raise ParameterError(f"block_weights: {unknown} are no known stream (built in, `opensmile` entries "
                             f"and `feature_streams`: {sorted(known)})")


def _tracking_errors(tracking: Tracking, parameters: Mapping[str, Any]) -> list[str]:
    """A model to log that this configuration does not train would fail at the run's end."""
    if tracking.model in (None, "chosen"):
        return []
    names = [f"{variant}.{classifier}" for variant, classifier in run_spec(parameters).every_model]
    if tracking.model in names:
        return []
    return [f"tracking.model: '{tracking.model}' is not a model this configuration trains; give chosen "
            f"(the model chosen on validation clips), null (no model) or one of: {', '.join(names)}"]


def _split_errors(split: Split, corpora: list[str], project_path: Path) -> list[str]:
    """The split settings the chosen strategy reads, checked together: a cross-corpus split of
    corpora this run does not read, or a folder without fold files, stops the run before it starts."""
    errors = []
    if split.strategy == "random" and split.test_size + split.validation_size >= 1:
        errors.append("split.test_size + split.validation_size: must leave clips to train on (got "
                      f"{split.test_size} + {split.validation_size})")
    if split.repeats > 1 and split.strategy != "random":
        errors.append(f"split.repeats: only split.strategy random is repeated (got repeats {split.repeats} "
                      f"with strategy {split.strategy}); set split.repeats: 1")
    if split.strategy == "folds_file":
        try:
            fold_files(project_path / split.folds_dir if split.folds_dir else None, split.folds_pattern)
        except SplitConfigError as error:
            errors.append(str(error))
    if split.strategy == "leave_one_corpus_out" and len(set(corpora)) < 2:
        errors.append(f"split.strategy leave_one_corpus_out: needs at least two corpora (corpora: "
                      f"{', '.join(corpora)}); add a corpus or use another split.strategy")
    if split.strategy == "cross_corpus":
        for key, names in (("train_corpora", split.train_corpora), ("test_corpora", split.test_corpora)):
            unknown = [name for name in names if name not in corpora]
            if not names or unknown:
                errors.append(f"split.{key}: must name corpora this run reads (corpora: "
                              f"{', '.join(corpora)}); "
                              f"got {names}")
        both = sorted(set(split.train_corpora) & set(split.test_corpora))
        if both:
            errors.append(f"split.train_corpora and split.test_corpora: {both} in both; a test corpus is "
                          "never trained on")
    return errors


def _corpus_errors(parameters: Mapping[str, Any], project_path: Path) -> list[str]:
    sources = parameters["corpus_sources"]
    errors = [f"corpora: '{corpus}' is not defined in corpus_sources (defined: {', '.join(sorted(sources))})"
              for corpus in parameters["corpora"] if corpus not in sources]
    vocabulary = list(parameters["emotion_vocabulary"])
    unknown = sorted(set(parameters["emotions"]) - set(vocabulary))
    if unknown:
        errors.append(f"emotions: {unknown} are not in emotion_vocabulary {vocabulary}")

    for corpus in parameters["corpora"]:
        source = sources.get(corpus) or {}
        try:
            compile_speaker_pattern(corpus, source)
        except CorpusError as error:
            errors.append(str(error))
        if source.get("reader") != "demo":
            continue
        folder = project_path / source["path"]
        if folder.resolve() != (project_path / DEFAULT_DEMO_PATH).resolve() \
                and not (folder / "demo_corpus.json").is_file():
            errors.append(
                f"corpus_sources.{corpus}.path: '{source['path']}' holds no demo corpus, and the demo corpus "
                f"is synthesised only into its default folder {DEFAULT_DEMO_PATH}: correct the path, or "
                "give a real corpus another reader (folder, csv...)")
    return errors


def validate_parameters(parameters: Mapping[str, Any], project_path: Path) -> None:
    """Raise `ParameterError` listing every setting that cannot run, by parameter path."""
    errors = _schema_errors(parameters)
    if not errors:  # the rules below read what the schema guarantees
        errors = _rule_errors(parameters, project_path)
    if errors:
        raise ParameterError("These settings cannot run (conf/base, conf/local or --params):\n  "
                             + "\n  ".join(errors))
