"""Training: recipes from the papers, one engine for every model, checkpoints, distributed runs."""

from convzoo.train.checkpoint import load_checkpoint, save_checkpoint
from convzoo.train.engine import (
    RunResult,
    StepState,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    build_recipe,
    evaluate,
    load_trained,
    plot_curves,
    train,
)
from convzoo.train.recipes import RECIPES, LearningRate, Recipe, get_recipe

__all__ = [
    "RECIPES",
    "LearningRate",
    "Recipe",
    "RunResult",
    "StepState",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "build_recipe",
    "evaluate",
    "get_recipe",
    "load_checkpoint",
    "load_trained",
    "plot_curves",
    "save_checkpoint",
    "train",
]
