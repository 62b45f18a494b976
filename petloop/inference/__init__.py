"""Model sets, the prediction engine, the interactive session and evaluation with a model."""

from petloop.clicks.clicklist import Click, ClickList, NoSuchClick
from petloop.inference.engine import Engine
from petloop.inference.modelset import ModelSet, ModelSetError, load_model_set
from petloop.inference.pipeline import Pipeline, Result, Session, TTAChoice
from petloop.inference.routing import birth_routing

__all__ = ["Click", "ClickList", "Engine", "ModelSet", "ModelSetError", "NoSuchClick",
           "Pipeline", "Result", "Session", "TTAChoice", "birth_routing", "load_model_set"]
