"""Using trained networks on new data: transfer learning (frozen features, fine-tuning) and linear probing."""

from convzoo.transfer.transfer import (
    MODES,
    FinetuneTask,
    Source,
    TransferResult,
    check_unfreeze,
    extract_features,
    freeze_all_but_last,
    linear_classifier,
    load_source,
    run_transfer,
    stage_count,
)

__all__ = [
    "MODES",
    "FinetuneTask",
    "Source",
    "TransferResult",
    "check_unfreeze",
    "extract_features",
    "freeze_all_but_last",
    "linear_classifier",
    "load_source",
    "run_transfer",
    "stage_count",
]
