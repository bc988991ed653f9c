"""DELIVER-layout data loading and joint transforms."""

from .deliver import CONDITIONS, FAILURE_CASES, DatasetError, DeliverDataset, collate, read_image, read_label, scan_split
from .transforms import EvalTransform, TrainTransform, eval_size, resize_modality, resize_nearest

__all__ = [
    "CONDITIONS", "FAILURE_CASES", "DatasetError", "DeliverDataset", "collate", "read_image", "read_label",
    "scan_split", "EvalTransform", "TrainTransform", "eval_size", "resize_modality", "resize_nearest",
]
