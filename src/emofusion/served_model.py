"""The file MLflow runs to make a logged emotion model when it is loaded (MLflow's "models from
code"): the model is this code and its artefacts, not a pickled Python object."""

import mlflow

from emofusion.serving import EmotionModel

mlflow.models.set_model(EmotionModel())
