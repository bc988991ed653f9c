"""Training losses."""

from .distillation import class_prototypes, hpdm_loss, logit_kl, rrm_loss, sample_cross_modal_pairing
from .ohem import OhemCrossEntropy

__all__ = [
    "OhemCrossEntropy",
    "class_prototypes",
    "hpdm_loss",
    "logit_kl",
    "rrm_loss",
    "sample_cross_modal_pairing",
]
