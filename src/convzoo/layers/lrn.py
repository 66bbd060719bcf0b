"""Local response normalisation, as Krizhevsky, Sutskever and Hinton define it (NIPS 2012, section 3.3)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class LocalResponseNorm(nn.Module):
    """Normalise each activity by the activities of the adjacent channels at the same position.

    ``b_i = a_i / (k + alpha * sum_j a_j ** 2) ** beta``, the sum running over the ``size`` channels centred on ``i``
    (clipped at the first and last channel). AlexNet uses ``size=5, alpha=1e-4, beta=0.75, k=2``; VGG's A-LRN network
    reuses those constants.

    The paper weights the sum of squares by ``alpha``. ``torch.nn.LocalResponseNorm``, like Caffe, averages it
    instead (``alpha / size`` per square); this module takes the paper's ``alpha`` and converts, so the constants
    read as printed.

    Args:
        size: Channels summed over, the channel itself included (the paper's ``n``).
        alpha: Weight of the sum of squares.
        beta: Exponent.
        k: Additive constant.
        groups: Normalise ``groups`` equal slices of the channels separately. In the original two-GPU AlexNet each
            tower normalised only its own kernel maps, so no activity reached across towers.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0, groups: int = 1) -> None:
        super().__init__()
        if size < 1 or groups < 1:
            raise ValueError(f"LocalResponseNorm needs size >= 1 and groups >= 1; got size={size}, groups={groups}")
        self.size = size
        self.alpha = alpha
        self.beta = beta
        self.k = k
        self.groups = groups

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return F.local_response_norm(x, self.size, alpha=self.alpha * self.size, beta=self.beta, k=self.k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == 1:
            return self._normalise(x)
        if x.shape[1] % self.groups:
            raise ValueError(f"LocalResponseNorm: {x.shape[1]} channels do not split into {self.groups} equal groups")
        return torch.cat([self._normalise(part) for part in x.chunk(self.groups, dim=1)], dim=1)

    def extra_repr(self) -> str:
        groups = f", groups={self.groups}" if self.groups > 1 else ""
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}{groups}"
