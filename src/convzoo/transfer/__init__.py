"""Using trained networks on new data: transfer learning (frozen features, fine-tuning) and linear probing."""

from convzoo.transfer.probe import LayerResult, ProbeResult, Probes, ProbeTask, pool_size, probe_points, run_probe
from convzoo.transfer.source import Source, load_source
from convzoo.transfer.transfer import (
    MODES,
    FinetuneTask,
    TransferResult,
    check_unfreeze,
    extract_features,
    freeze_all_but_last,
    linear_classifier,
    run_transfer,
    stage_count,
)

__all__ = [
    "MODES",
    "FinetuneTask",
    "LayerResult",
    "ProbeResult",
    "ProbeTask",
    "Probes",
    "Source",
    "TransferResult",
    "check_unfreeze",
    "extract_features",
    "freeze_all_but_last",
    "linear_classifier",
    "load_source",
    "pool_size",
    "probe_points",
    "run_probe",
    "run_transfer",
    "stage_count",
]
