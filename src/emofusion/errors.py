"""The project's exceptions, in one place: `except EmoFusionError` catches whatever the project
itself refused, and each class keeps the builtin base it always had (`except ValueError` still
catches a bad setting). Every message says what to do."""

from __future__ import annotations

from collections.abc import Sequence

from emofusion.keras_cache import keras_cache_dir


class EmoFusionError(Exception):
    """Something the project refused or could not do, with a message that says what to do."""


# --- settings that cannot work, said before anything runs --------------------------------------

class ParameterError(EmoFusionError, ValueError):
    """Parameters that cannot run; the message names each one and what it may be."""


class CorpusError(EmoFusionError, ValueError):
    """A corpus cannot be read as configured; the message says what to do."""


class TransferConfigError(EmoFusionError, ValueError):
    """A transfer_features or backbones setting that cannot work."""


class FusionConfigError(EmoFusionError, ValueError):
    """A fusion variant that cannot be built, said before anything runs."""


class SplitConfigError(EmoFusionError, ValueError):
    """A split that cannot be made from these clips with these settings."""


class ClassifierConfigError(EmoFusionError, ValueError):
    """A classifier entry that cannot be built, said before anything runs."""


class FineTuningConfigError(ClassifierConfigError):
    """A fine-tuning entry that cannot be trained."""


# --- data -----------------------------------------------------------------------------------------

class ClipRejected(EmoFusionError, ValueError):
    """The clip cannot be used; the message is the reason recorded in rejected_clips."""


class MissingClipsError(EmoFusionError, KeyError):
    """Clip ids asked of an array that lacks them: it is older than what asks."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = list(missing)
        super().__init__(f"{len(self.missing)} clip ids are not in this array (first: {self.missing[:3]}); "
                         "re-run the pipeline that produced it")


class StaleInputError(EmoFusionError, RuntimeError):
    """A stored input made with other settings than the run that reads it asks for."""


class MissingInputError(EmoFusionError, RuntimeError):
    """An input of the requested pipeline has not been made yet."""


class RunLockedError(EmoFusionError, RuntimeError):
    """Another run holds this project's data folder."""


class UnknownPipelineError(EmoFusionError, ValueError):
    """`kedro run --pipeline(s)` names a pipeline the project does not have."""


class TrackingError(EmoFusionError, ConnectionError):
    """The MLflow tracking server cannot be reached, or stopped answering, and `tracking.unreachable`
    says to stop."""


class EngineUnreachableError(EmoFusionError, ConnectionError):
    """The Dask cluster of `execution.scheduler_address` does not answer: said before any work."""


class JoblibWrittenFile(EmoFusionError, ValueError):
    """A model or fold file that an earlier version wrote with `joblib.dump`, met while reading the
    current format (emofusion.shared_arrays), which then reads it with joblib."""


class CatalogEntryError(EmoFusionError, ValueError):
    """A catalog entry that cannot take what the node making it yields (an output made in parts)."""


class DamagedDatasetError(EmoFusionError, RuntimeError):
    """A stored dataset whose files do not agree with each other (cut short by a full disk, a copy
    stopped half-way): named, with how to remake it, instead of NumPy's error deep in a stack."""


class ImageNetWeightsUnavailable(EmoFusionError, RuntimeError):
    """Keras could not download a backbone's ImageNet weights (typically: no network)."""

    def __init__(self, backbone: str, url: str, reason: str, consequence: str = "") -> None:
        self.backbone, self.url, self.reason = backbone, url, reason
        self.file = keras_cache_dir() / url.rsplit("/", 1)[-1]
        super().__init__(
            f"ImageNet weights for backbone '{backbone}' could not be downloaded ({reason}). "
            f"Keras wanted the file {self.file.name} from {url}. Download it on a machine with "
            f"internet and put it in {self.file.parent}/, or set transfer_features.weights to its "
            f"path. {consequence}".strip()
        )


# --- `emofusion predict` --------------------------------------------------------------------------

class ModelMismatchError(EmoFusionError, ValueError):
    """A trained model that cannot be applied to features made with the project's settings now."""


class SpeakersNeededError(EmoFusionError, ValueError):
    """A model trained on features standardised per speaker, asked to predict without speakers."""


class SpeakersTableError(EmoFusionError, ValueError):
    """A `--speakers` CSV that does not give each file exactly one speaker."""


class DomainBatchError(EmoFusionError, ValueError):
    """A batch of files that `--same-domain` cannot standardise by its own statistics."""
