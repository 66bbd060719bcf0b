"""Training: recipes from the papers, one engine for every model and task, checkpoints, distributed runs."""

from convzoo.train.checkpoint import load_checkpoint, load_trained, save_checkpoint
from convzoo.train.config import TrainConfig, build_recipe
from convzoo.train.evaluation import evaluate
from convzoo.train.recipes import RECIPES, LearningRate, Recipe, get_recipe
from convzoo.train.run_folder import plot_curves
from convzoo.train.tasks import ClassificationTask, Metrics, StepOutput, Task
from convzoo.train.trainer import EpochResult, RunResult, StepState, Trainer, TrainingDiverged, train

__all__ = [
    "RECIPES",
    "ClassificationTask",
    "EpochResult",
    "LearningRate",
    "Metrics",
    "Recipe",
    "RunResult",
    "StepOutput",
    "StepState",
    "Task",
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
