"""A trained model as an MLflow model, so that `mlflow models serve` answers HTTP requests with what
`emofusion predict` prints: the model, its card and the parameters of the run that trained it, behind
MLflow's `pyfunc` interface. Its predict is predict's own code (`audio_files`, `predict_emotions`),
through the project's feature pipelines built from those parameters: no second copy of the features.

Each input row is one recording: `path` (a file or folder where the model runs) or `audio` (the
file's bytes, base64-encoded, in any format predict reads; `name` names it in the answer), and
`speaker` for a model trained on features standardised per speaker. The answer has a row per file:
`file`, `emotion`, `windows` and `p_<emotion>`, or `reason` for a file that could not be used."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import tempfile
import warnings
from collections.abc import Mapping
from importlib.metadata import requires
from pathlib import Path
from typing import Any

import joblib
import mlflow
import pandas as pd
from kedro.io import DataCatalog
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from emofusion.inference import predict_emotions
from emofusion.instances import model_dataset, use_parameters
from emofusion.pipeline_registry import every_pipeline
from emofusion.prediction_inputs import audio_files
from emofusion.run_spec import run_spec

# The name of the model in its MLflow run (`runs:/<run id>/emotion_model`).
MODEL_NAME = "emotion_model"
# The model's files, by the name of their dataset in the catalog (`modelling.<variant>.<classifier>.*`).
MODEL_FILES = ("trained_model", "model_card")


class EmotionModel(mlflow.pyfunc.PythonModel):
    """`emofusion predict` for MLflow: loads the logged model and builds the feature pipelines once,
    then answers each batch of recordings."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        # Kedro logs each step of every request's feature pipelines at INFO, which predict hides too.
        logging.getLogger("kedro").setLevel(logging.WARNING)
        config = context.model_config
        self._variant = config["variant"]
        # Each file read as the project's catalog reads it, from the model's own copy.
        catalog = DataCatalog.from_config({
            key: dict(entry, filepath=context.artifacts[key]) for key, entry in config["datasets"].items()})
        self._model = catalog.load("trained_model")
        self._card = catalog.load("model_card")
        self._parameters = json.loads(Path(context.artifacts["parameters"]).read_text())
        use_parameters(self._parameters)
        spec = run_spec(self._parameters)
        self._pipelines = every_pipeline(spec.feature_pipelines, spec)

    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row per file: its emotion and the probability of each, or why it could not be used."""
        records = model_input.to_dict("records")
        with tempfile.TemporaryDirectory(prefix="emofusion-") as folder:
            paths, shown, unusable = [], {}, []
            for i, record in enumerate(records):
                name = _given(record, "name") or f"input {i}"
                if _given(record, "audio"):
                    try:
                        data = base64.b64decode(record["audio"], validate=True)
                    except (binascii.Error, ValueError) as error:
                        unusable.append({"file": name, "reason": f"audio is not base64 ({error})"})
                        continue
                    path = Path(folder) / f"{i}-audio{Path(name).suffix}"  # none a part of another
                    path.write_bytes(data)
                    shown[str(path)] = name
                elif _given(record, "path"):
                    path = Path(record["path"])
                else:
                    unusable.append({"file": name, "reason": "neither path nor audio given"})
                    continue
                paths.append((path, _given(record, "speaker")))
            files, missing = audio_files([path for path, _ in paths])
            if files:
                table, _, rejected = predict_emotions(
                    files, self._variant, self._model, self._card, self._pipelines, self._parameters,
                    _speakers(files, paths), (params or {}).get("hop_s"))
            else:  # nothing to run the pipelines on, as predict does
                table = pd.DataFrame(columns=["file", "emotion"])
                rejected = pd.DataFrame(columns=["clip_id", "reason"])
        rows = pd.concat([table, missing, rejected.rename(columns={"clip_id": "file"})[["file", "reason"]],
                          pd.DataFrame(unusable, columns=["file", "reason"])], ignore_index=True)
        # Each audio by the name it was given, not the file it was written to here.
        rows["file"] = rows["file"].map(lambda file: shown.get(file, file))
        rows["reason"] = rows["reason"].map(lambda reason: _as_given(reason, shown))
        if "windows" in rows:  # a count, also beside the rows of rejected files
            rows["windows"] = rows["windows"].astype("Int64")
        # JSON's null, not NaN, where a row has no value (a rejected file's emotion, a usable one's reason).
        return rows.astype(object).where(rows.notna(), None)


def _given(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    return value if isinstance(value, str) and value else None


def _as_given(text: Any, shown: Mapping[str, str]) -> Any:
    if isinstance(text, str):
        for path, name in shown.items():
            text = text.replace(path, name)
    return text


def _speakers(files: list[Path], given: list[tuple[Path, str | None]]) -> list[str] | None:
    """Each file's speaker, from the input row that named it or the folder it was found in; None
    when no row gives one (predict's refusal says what a model standardised per speaker needs)."""
    if not any(speaker for _, speaker in given):
        return None
    speaker_of = {path: speaker for path, speaker in given}
    return [speaker_of.get(file) or next((speaker for path, speaker in given if path in file.parents), None)
            for file in files]


def signature(classes: list[str]) -> ModelSignature:
    """What the model takes and answers (see the module's docstring); `hop_s` as predict's --hop."""
    text = [ColSpec("string", column, required=False) for column in ("path", "audio", "name", "speaker")]
    answer = [ColSpec("string", "file"), ColSpec("string", "emotion", required=False),
              ColSpec("long", "windows", required=False),
              *(ColSpec("double", f"p_{label}", required=False) for label in classes),
              ColSpec("string", "reason", required=False)]
    return ModelSignature(inputs=Schema(text), outputs=Schema(answer),
                          params=ParamSchema([ParamSpec("hop_s", "double", None)]))


def log_emotion_model(catalog: DataCatalog, project_path: Path, variant: str, classifier: str,
                      parameters: Mapping[str, Any]) -> ModelInfo:
    """Log `variant.classifier` as an MLflow model in the active run, with its card and `parameters`."""
    config = catalog.to_config()[0]
    files, datasets = {}, {}
    for key in MODEL_FILES:
        entry = dict(config[model_dataset(variant, classifier, key)])
        files[key] = str(project_path / entry.pop("filepath"))
        datasets[key] = {option: value for option, value in entry.items() if option != "metadata"}
    card = catalog.load(model_dataset(variant, classifier, "model_card"))
    with tempfile.TemporaryDirectory(prefix="emofusion-") as folder, warnings.catch_warnings():
        # An input example would be recordings, which MLflow would run through the model to log it.
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        # The model whole, its arrays in the one file: the project's model file names arrays that
        # its data folder shares between models (emofusion.shared_arrays), which MLflow would not have.
        files["trained_model"] = str(Path(folder) / "trained_model.pkl")
        joblib.dump(catalog.load(model_dataset(variant, classifier, "trained_model")), files["trained_model"])
        datasets["trained_model"] = {"type": "pickle.PickleDataset", "backend": "joblib"}
        settings = Path(folder) / "parameters.json"
        settings.write_text(json.dumps(parameters, indent=1, default=str))
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME, python_model=str(Path(__file__).with_name("served_model.py")),
            artifacts={**files, "parameters": str(settings)},
            model_config={"variant": variant, "classifier": classifier, "datasets": datasets},
            signature=signature([str(label) for label in card["classes"]]),
            # The project's own requirements: given, MLflow does not run the model to guess them.
            pip_requirements=[requirement for requirement in requires("emofusion") or []
                              if "extra ==" not in requirement])
