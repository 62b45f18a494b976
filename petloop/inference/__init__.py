"""Model sets, the prediction pipeline, the interactive session and evaluation with a model."""

from petloop.inference.modelset import ModelSet, ModelSetError, birth_routing, load_model_set
from petloop.inference.pipeline import Pipeline, Result, Session, TTAChoice

__all__ = ["ModelSet", "ModelSetError", "Pipeline", "Result", "Session", "TTAChoice",
           "birth_routing", "load_model_set"]
