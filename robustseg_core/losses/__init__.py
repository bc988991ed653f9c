"""Training losses: OHEM cross-entropy (teacher and student), logit KL and HPDM (distillation), RRM."""

from .distillation import class_prototypes, hpdm_loss, logit_kl, sample_cross_modal_pairing
from .ohem import OhemCrossEntropy
from .rrm import rrm_loss

__all__ = [
    "OhemCrossEntropy",
    "class_prototypes",
    "hpdm_loss",
    "logit_kl",
    "rrm_loss",
    "sample_cross_modal_pairing",
]
