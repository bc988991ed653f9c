"""Pretrained MiT encoders: official ImageNet files and the ones ``pretrain_encoder`` writes.

Both are state dicts in the official SegFormer MiT key layout (``patch_embed1.proj.weight``,
``block1.0.attn.q.weight``, ..., ``norm4.bias``) and load strictly into
:class:`~robustseg_core.models.mit.MixVisionTransformer`:

* an official file (``mit_b0.pth`` ...): a bare state dict, or one under ``"state_dict"`` or
  ``"model"``, whose ImageNet classifier ``head.*`` is dropped;
* a file of ``pretrain_encoder``: ``{"state_dict": ..., "meta": {...}}`` where ``meta`` names the
  preset and how the encoder was trained (command, data and its seeds, budget, wall time).

``source`` may also name an encoder shipped inside the package (:data:`SHIPPED_ENCODERS`): the
CPU preset's stand-in for ImageNet weights, pretrained on generated scenes that the benchmark never
uses.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from ..atomic import write_bytes_atomic
from ..errors import UserError, archive_damage, torch_load_failure

#: Name -> file of the encoders shipped in the package (usable as ``model.pretrained``).
SHIPPED_ENCODERS: dict[str, Path] = {
    "sim:mit_cpu": Path(__file__).resolve().parent / "weights" / "mit_cpu_sim.pth",
}
ENCODER_FORMAT = "robustseg_mit_encoder/1"
_WRAPPER_KEYS = ("state_dict", "model")
_CLASSIFIER_PREFIX = "head."
_KEYS_SHOWN = 5


class EncoderFileError(UserError, ValueError):
    """A pretrained encoder file is unreadable or does not fit the encoder; the message names the file."""


def resolve_pretrained(source: str | os.PathLike) -> Path:
    """The file ``source`` names: a shipped encoder's name (``sim:mit_cpu``) or a path."""
    text = os.fspath(source)
    if text in SHIPPED_ENCODERS:
        path = SHIPPED_ENCODERS[text]
        if not path.is_file():
            raise FileNotFoundError(f"shipped encoder {text!r} is missing from the package ({path})")
        return path
    path = Path(text)
    if path.is_dir():
        raise EncoderFileError(f"pretrained encoder {text}: a folder, not an encoder file (pretrain_encoder writes "
                               "<output_dir>/encoder.pth)")
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained encoder not found: {text} (a path, or one of the shipped encoders: "
            f"{', '.join(SHIPPED_ENCODERS)})"
        )
    return path


def read_pretrained(source: str | os.PathLike) -> tuple[dict[str, Tensor], dict, Path]:
    """(encoder state dict without ``head.*``, metadata (empty for official files), resolved path)."""
    path = resolve_pretrained(source)
    damage = archive_damage(path)
    if damage:
        raise EncoderFileError(f"cannot read pretrained encoder {path}: the file is damaged ({damage})")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise EncoderFileError(
            f"cannot read pretrained encoder {path}: the file is corrupted, truncated or not a PyTorch weights "
            f"file ({torch_load_failure(path, error)})"
        ) from error
    meta = checkpoint.get("meta", {}) if isinstance(checkpoint, dict) else {}
    if isinstance(checkpoint, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not (isinstance(checkpoint, dict) and all(isinstance(k, str) and isinstance(v, Tensor)
                                                  for k, v in checkpoint.items())):
        raise EncoderFileError(
            f"pretrained encoder {path} does not hold a state dict of tensors (bare or under "
            f"{' / '.join(map(repr, _WRAPPER_KEYS))})"
        )
    state = {key: value for key, value in checkpoint.items() if not key.startswith(_CLASSIFIER_PREFIX)}
    return state, dict(meta) if isinstance(meta, Mapping) else {}, path


def load_pretrained_encoder(encoder: nn.Module, source: str | os.PathLike, preset: str | None = None) -> dict:
    """Load a pretrained encoder file (or shipped name) into ``encoder`` strictly; returns its metadata.

    Raises FileNotFoundError for a missing file and EncoderFileError (a ValueError), naming the file, for an unreadable one,
    one written for another preset than ``preset``, or any missing, unexpected or misshapen key.
    """
    state, meta, path = read_pretrained(source)
    stored_preset = meta.get("preset")
    if preset is not None and stored_preset is not None and stored_preset != preset:
        raise EncoderFileError(f"pretrained encoder {path} is for preset {stored_preset!r}, the model is {preset!r}")
    _check_keys(encoder, state, path)
    encoder.load_state_dict(state, strict=True)
    return meta


def save_encoder(path: str | os.PathLike, encoder: nn.Module, meta: Mapping) -> None:
    """Write ``encoder``'s weights in the official key layout plus ``meta``, atomically."""
    state = {key: value.detach().cpu().clone() for key, value in encoder.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"state_dict": state, "meta": {"format": ENCODER_FORMAT, **dict(meta)}}, buffer)
    write_bytes_atomic(path, buffer.getbuffer())


def state_dict_differences(expected: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> list[str]:
    """How the weights ``state`` differ from a module's ``expected`` state dict: "N missing keys: a, b, ...",
    "N unexpected keys: ...", "N shape mismatches: key: file (...) vs model (...)", the first few keys of each
    (a whole list for another preset runs to thousands of characters). Empty when they fit."""
    problems = []
    for label, entries in (
        ("missing keys", [key for key in expected if key not in state]),
        ("unexpected keys", [key for key in state if key not in expected]),
        ("shape mismatches", [f"{key}: file {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
                              for key, value in state.items() if key in expected and value.shape != expected[key].shape]),
    ):
        if entries:
            more = len(entries) - _KEYS_SHOWN
            problems.append(f"{len(entries)} {label}: {', '.join(entries[:_KEYS_SHOWN])}"
                            + (f", ... ({more} more)" if more > 0 else ""))
    return problems


def _check_keys(encoder: nn.Module, state: Mapping[str, Tensor], path: Path) -> None:
    problems = state_dict_differences(encoder.state_dict(), state)
    if problems:
        raise EncoderFileError(
            f"pretrained encoder {path} does not match the encoder ({type(encoder).__name__}, dims "
            f"{getattr(encoder, 'embed_dims', '?')}): " + "; ".join(problems)
        )
