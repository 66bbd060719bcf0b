"""Small single-purpose building blocks shared by the model families."""

from convzoo.layers.conv import ConvNormAct, conv1x1, conv3x3
from convzoo.layers.se import SqueezeExcite
from convzoo.layers.shortcuts import ZeroPadShortcut, make_shortcut

__all__ = ["ConvNormAct", "SqueezeExcite", "ZeroPadShortcut", "conv1x1", "conv3x3", "make_shortcut"]
