"""Per-pixel losses of semantic segmentation, and the matching of a target mask to the logits it scores.

`segmentation_loss` is the cross-entropy of every labelled pixel (Long et al. 2015), optionally plus a weighted soft
Dice loss (Milletari et al., "V-Net", 3DV 2016), which weighs every class alike however few pixels it has. Pixels
labelled `IGNORE_INDEX` count in neither.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convzoo.data.transforms import IGNORE_INDEX

__all__ = ["center_crop_mask", "dice_loss", "segmentation_loss"]


def center_crop_mask(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The centre ``size`` (h, w) of masks (N, H, W): the region a network of valid convolutions labels.

    The original U-Net (Ronneberger et al. 2015) loses a border of pixels at every unpadded convolution, so its output
    covers the centre of its input, with the same margin on every side.

    Raises:
        ValueError: ``size`` larger than the masks, or a margin that is not the same on both sides (odd), which no
            network of valid convolutions produces: the logits are not a centre crop of the input.
    """
    h, w = masks.shape[-2:]
    th, tw = size
    if (th, tw) == (h, w):
        return masks
    dh, dw = h - th, w - tw
    if dh < 0 or dw < 0 or dh % 2 or dw % 2:
        raise ValueError(
            f"the network's logits are {th}x{tw} for masks of {h}x{w}: a segmentation network must return logits "
            f"of its input's size, or of a centre crop of it (valid convolutions, as the original U-Net)"
        )
    return masks[..., dh // 2 : dh // 2 + th, dw // 2 : dw // 2 + tw]


def dice_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, ignore_index: int = IGNORE_INDEX, smooth: float = 1.0
) -> torch.Tensor:
    """Soft multi-class Dice loss: 1 - the mean over classes of ``(2 |P.T| + s) / (|P| + |T| + s)``.

    P are the softmax probabilities of a class and T its one-hot truth, summed over the labelled pixels of the
    whole batch (ignored pixels left out); ``s`` keeps the ratio defined for a class absent from both.

    Args:
        logits: (N, C, H, W).
        targets: (N, H, W) class indices, ``ignore_index`` for pixels to leave out.
        ignore_index: The label of pixels to leave out.
        smooth: The constant s.
    """
    num_classes = logits.shape[1]
    valid = (targets != ignore_index).unsqueeze(1)
    probs = logits.float().softmax(1) * valid
    onehot = F.one_hot(targets.long().where(valid[:, 0], 0), num_classes).permute(0, 3, 1, 2) * valid
    dims = (0, 2, 3)
    overlap = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * overlap + smooth) / (total + smooth)).mean()


def segmentation_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    dice_weight: float = 0.0,
    label_smoothing: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Mean cross-entropy of the labelled pixels, plus ``dice_weight`` times `dice_loss`.

    Args:
        logits: (N, C, H, W).
        targets: (N, H, W) class indices, ``ignore_index`` for pixels to leave out.
        dice_weight: Weight of the Dice term (0: cross-entropy alone).
        label_smoothing: Label smoothing of the cross-entropy (the Dice term uses the hard targets).
        ignore_index: The label of pixels to leave out.
    """
    targets = targets.long()
    logits = logits.float()
    if not bool((targets != ignore_index).any()):
        # Cross-entropy with every pixel ignored is 0 / 0; a batch without labels teaches nothing.
        return logits.sum() * 0.0
    loss = F.cross_entropy(logits, targets, ignore_index=ignore_index, label_smoothing=label_smoothing)
    if dice_weight:
        loss = loss + dice_weight * dice_loss(logits, targets, ignore_index=ignore_index)
    return loss
