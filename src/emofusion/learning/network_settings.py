"""Checked fine-tuning entries, without importing TensorFlow, so that a bad entry fails when the
run specification is parsed, before anything runs.

An entry of `fine_tuning.models` is merged over `fine_tuning.defaults` (key by key, one level of
nesting), then checked by its schema (`CnnEntry`, `LstmEntry`, `LateFusionEntry`, chosen by `kind`);
the result is plain JSON-able data that travels to the training process."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from emofusion.errors import FineTuningConfigError
from emofusion.fusion_layout import SPEAKER_NORMALISED_SPECTROGRAMS
from emofusion.imagenet.config import backbone_spec

NETWORK_KINDS = ("cnn", "lstm")
LATE_FUSION = "late_fusion"
NETWORK_INPUT = "log_mel_spectrogram"  # the dataset a network reads (see `network_input`)

Count = Annotated[int, Field(gt=0, strict=True)]
Rate = Annotated[float, Field(gt=0, strict=True)]
Share = Annotated[float, Field(ge=0, lt=1, strict=True)]
Extent = Annotated[int, Field(ge=0, strict=True)]


def network_input(settings: Mapping[str, Any]) -> str:
    """The spectrogram dataset a checked network entry trains, validates, tests and predicts on: with
    `speaker_normalisation: speaker`, the fusion pipeline's spectrograms with each mel band
    standardised by the clip's own speaker's statistics."""
    by_speaker = settings["speaker_normalisation"] == "speaker"
    return SPEAKER_NORMALISED_SPECTROGRAMS if by_speaker else NETWORK_INPUT


def merged_entry(defaults: Mapping[str, Any] | None, entry: Mapping[str, Any]) -> dict[str, Any]:
    """The entry over the defaults; mappings (augmentation, optimizer, lstm) merge key by key."""
    merged = {
        key: dict(value) if isinstance(value, Mapping) else value for key, value in (defaults or {}).items()
    }
    for key, value in entry.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HeadLayer(_Strict):
    units: Count
    dropout: Share = 0.0


class Optimizer(_Strict):
    """Adam; unfrozen backbone layers train at their own, lower rate."""

    learning_rate: Rate
    backbone_learning_rate: Rate | None = None


class Augmentation(_Strict):
    """Mixup's alpha (0: off) and SpecAugment's masks and shift, on training batches only."""

    mixup_alpha: Annotated[float, Field(ge=0, strict=True)] = 0.0
    time_masks: Extent = 0
    time_mask_width: Extent = 0
    frequency_masks: Extent = 0
    frequency_mask_width: Extent = 0
    time_shift: Extent = 0


class Lstm(_Strict):
    features: Literal["mfcc", "log_mel"]
    n_mfcc: Count = 40
    units: Count
    bidirectional: bool = False
    dropout: Share = 0.0


class _Network(_Strict):
    """What every network entry sets, merged over `fine_tuning.defaults` (which set some keys that
    only one kind reads, e.g. `image_size` for an LSTM)."""

    head: list[HeadLayer] = Field(default_factory=list)
    image_size: Any = None
    epochs: Count
    batch_size: Count
    patience: Count
    early_stopping_fraction: Annotated[float, Field(gt=0, lt=1, strict=True)]
    optimizer: Optimizer
    augmentation: Augmentation = Augmentation()
    precision: Literal["auto", "float32", "mixed_bfloat16"] = "auto"  # no float16: two optimizers
    jit_compile: Literal["auto"] | bool = "auto"
    speaker_normalisation: Literal["none", "speaker"] = "none"
    backbone: str | None = None
    weights: str | None = None
    configuration: Any = None
    lstm: Lstm | None = None

    def common(self, name: str, random_seed: int) -> dict[str, Any]:
        return {
            "name": name, "kind": self.kind,  # type: ignore[attr-defined]
            "head": [layer.model_dump(exclude_unset=True) for layer in self.head],
            "epochs": self.epochs, "batch_size": self.batch_size, "patience": self.patience,
            "early_stopping_fraction": self.early_stopping_fraction,
            "learning_rate": self.optimizer.learning_rate, "augmentation": self.augmentation.model_dump(),
            "precision": self.precision, "jit_compile": self.jit_compile, "random_seed": random_seed,
            "speaker_normalisation": self.speaker_normalisation,
        }


class CnnEntry(_Network):
    """A CNN: an ImageNet backbone frozen (`configuration: frozen`, C1) or with its last layers or
    named blocks unfrozen (`{unfreeze: N | [names]}`, C2), on images of `image_size` or a progressive
    schedule of them."""

    kind: Literal["cnn"]
    backbone: str

    @field_validator("configuration")
    @classmethod
    def _unfrozen(cls, value: Any) -> Any:
        if value == "frozen":
            return value
        only_unfreeze = isinstance(value, Mapping) and set(value) == {"unfreeze"}
        unfreeze = value["unfreeze"] if only_unfreeze else None
        last_layers = isinstance(unfreeze, int) and not isinstance(unfreeze, bool) and unfreeze > 0
        blocks = (isinstance(unfreeze, list | tuple) and len(unfreeze) > 0
                  and all(isinstance(n, str) and n for n in unfreeze))
        if last_layers or blocks:
            return value
        raise ValueError("configuration must be `frozen` or {unfreeze: N} (the last N layers) or "
                         "{unfreeze: [block names]} (layers whose name starts with one)")

    @field_validator("image_size")
    @classmethod
    def _stages(cls, value: Any) -> Any:
        """[h, w], or a progressive schedule: a list of {size: [h, w], epochs: n}, smallest first."""
        progressive = isinstance(value, list | tuple) and value and isinstance(value[0], Mapping)
        stages = value if progressive else None
        for size in [stage.get("size") for stage in stages] if stages else [value]:
            if not (isinstance(size, list | tuple) and len(size) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool) and v >= 32 for v in size)):
                raise ValueError(f"an image size is [height, width] of at least 32 pixels, got {size!r}")
        for stage in stages or []:
            epochs = stage.get("epochs")
            if set(stage) != {"size", "epochs"} or not (isinstance(epochs, int) and epochs > 0):
                raise ValueError(f"a stage is {{size: [height, width], epochs: N}} with N > 0, got {stage!r}")
        return value

    def settings(self, name: str, backbones: Mapping[str, Mapping[str, Any]], random_seed: int
                 ) -> dict[str, Any]:
        spec = backbone_spec(self.backbone, backbones)
        unfreeze = None if self.configuration == "frozen" else self.configuration["unfreeze"]
        if unfreeze is not None and self.optimizer.backbone_learning_rate is None:
            raise FineTuningConfigError(f"fine_tuning model '{name}': optimizer.backbone_learning_rate: not "
                                        "set (the unfrozen backbone layers train at this rate)")
        stages = ([{"size": list(stage["size"]), "epochs": stage["epochs"]} for stage in self.image_size]
                  if isinstance(self.image_size[0], Mapping) else [{"size": list(self.image_size),
                                                                     "epochs": self.epochs}])
        settings = self.common(name, random_seed) | {
            # The registry's entry but its input size: its tapped layers and their pooling.
            "backbone": {"name": spec.name, "application": spec.application,
                         "preprocess_input": spec.preprocess_input, "layers": list(spec.layers),
                         "pooling": spec.pooling},
            "weights": None if str(self.weights).lower() == "none" else str(self.weights),
            "unfreeze": list(unfreeze) if isinstance(unfreeze, list | tuple) else unfreeze,
            "backbone_learning_rate": None if unfreeze is None else self.optimizer.backbone_learning_rate,
            "stages": stages,
        }
        _check_pooling(name, spec.name, spec.pooling, {tuple(stage["size"]) for stage in stages})
        return settings


def _check_pooling(name: str, backbone: str, pooling: str, sizes: set[tuple[int, ...]]) -> None:
    """A backbone pooled over time keeps each frequency row (or, unpooled, every position), so the
    head's width follows the image's height (or size): a schedule may not change it."""
    if pooling not in ("avg", "max") and len({size[0] if pooling != "none" else size for size in sizes}) > 1:
        raise FineTuningConfigError(
            f"{name}: backbone '{backbone}' pools its maps with `{pooling}`, which keeps "
            f"{'each frequency row' if pooling != 'none' else 'every position'}, "
            "so the head's width follows the image "
            + ("height: a progressive schedule may change only the width (time)" if pooling != "none"
               else "size: a progressive schedule cannot change it")
            + "; avg or max pooling allows any sizes")


class LstmEntry(_Network):
    """An LSTM on frame sequences (MFCC or log-mel)."""

    kind: Literal["lstm"]
    lstm: Lstm

    def settings(self, name: str, backbones: Mapping[str, Mapping[str, Any]], random_seed: int
                 ) -> dict[str, Any]:
        return self.common(name, random_seed) | {"lstm": self.lstm.model_dump(),
                                                 "stages": [{"size": None, "epochs": self.epochs}]}


class LateFusionEntry(_Strict):
    """A fine-tuned network's probabilities fused late with a classical model of a fusion variant."""

    kind: Literal["late_fusion"]
    network: str
    variant: str
    classifier: str


def _parsed(name: str, entry: Mapping[str, Any], schema: type[BaseModel]) -> Any:
    try:
        return schema.model_validate(dict(entry))
    except ValidationError as error:
        problems = [f"{'.'.join(map(str, problem['loc'])) or 'entry'}: "
                    f"{problem['msg'].removeprefix('Value error, ')}"
                    + (f" (got {problem['input']!r})" if problem["type"] != "missing" else "")
                    for problem in error.errors(include_url=False)]
        raise FineTuningConfigError(f"fine_tuning model '{name}': " + "; ".join(problems)) from None


NETWORK_ENTRIES: dict[str, type[CnnEntry] | type[LstmEntry]] = {"cnn": CnnEntry, "lstm": LstmEntry}


def network_settings(name: str, entry: Mapping[str, Any], backbones: Mapping[str, Mapping[str, Any]],
                     random_seed: int) -> dict[str, Any]:
    """A checked network entry (kind cnn or lstm) as the training process gets it."""
    kind = entry.get("kind")
    if kind not in NETWORK_ENTRIES:
        raise FineTuningConfigError(f"fine_tuning model '{name}': kind '{kind}' is not one of: "
                                    f"{', '.join((*NETWORK_KINDS, LATE_FUSION))}")
    return _parsed(name, entry, NETWORK_ENTRIES[kind]).settings(name, backbones, random_seed)


def model_entries(parameters: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every entry of `fine_tuning.models` that is not null, checked: name -> the entry (late fusion
    entries as they are, networks merged over the defaults, as `network_settings`); their names are
    emofusion.instances' to check. None unless `fine_tuning.enabled`: networks train for minutes per
    fold, too long for the demo run."""
    fine_tuning = parameters.get("fine_tuning") or {}
    if not fine_tuning.get("enabled"):
        return {}
    entries = {name: entry for name, entry in (fine_tuning.get("models") or {}).items() if entry is not None}
    backbones, random_seed = parameters.get("backbones") or {}, parameters.get("random_seed", 0)
    checked = {name: network_settings(name, merged_entry(fine_tuning.get("defaults"), entry), backbones,
                                      random_seed)
               for name, entry in entries.items() if entry.get("kind") != LATE_FUSION}
    for name, entry in entries.items():
        if entry.get("kind") != LATE_FUSION:
            continue
        late = _parsed(name, entry, LateFusionEntry)
        if late.network not in checked:
            raise FineTuningConfigError(f"late fusion '{name}': network '{late.network}' is not a cnn or "
                                        "lstm entry of fine_tuning.models")
        if (parameters.get("fusion_variants") or {}).get(late.variant) is None:
            raise FineTuningConfigError(f"late fusion '{name}': variant '{late.variant}' is not a fusion "
                                        "variant")
        if (parameters.get("classifiers") or {}).get(late.classifier) is None:
            raise FineTuningConfigError(f"late fusion '{name}': classifier '{late.classifier}' is not in "
                                        "classifiers")
        checked[name] = {"kind": LATE_FUSION, "network": late.network,
                         "network_input": network_input(checked[late.network]), "variant": late.variant,
                         "classifier": late.classifier}
    return checked
