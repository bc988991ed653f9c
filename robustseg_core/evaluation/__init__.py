"""Confusion-matrix metrics and the any-modal evaluation protocols."""

from .anymodal import COMBINATIONS, FULL_COMBINATION, combination_mask, evaluate_combinations, markdown_table, summarize
from .metrics import ConfusionMatrix

__all__ = [
    "COMBINATIONS", "FULL_COMBINATION", "ConfusionMatrix", "combination_mask", "evaluate_combinations",
    "markdown_table", "summarize",
]
