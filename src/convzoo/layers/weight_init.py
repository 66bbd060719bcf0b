"""Weight initialisations that several families share."""

from __future__ import annotations

import torch.nn as nn


def he_fan_out_init_(module: nn.Module) -> None:
    """He initialisation on the fan-out for every convolution inside ``module``; unit batch norms, zero biases.

    He, Zhang, Ren and Sun, "Delving Deep into Rectifiers", ICCV 2015, in the form of the ResNet authors'
    fb.resnet.torch code, which DenseNet and BagNet inherit: a normal of variance 2 / (k * k * out_channels).
    Linear layers are left alone; each family initialises its classifier itself.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


__all__ = ["he_fan_out_init_"]
