"""Checkpoints: a dict of tensors and plain metadata, written atomically, read with weights_only=True.

Layout: ``{"model": state_dict, "architecture": {...}, "meta": {classes, modalities,
normalisation, config, scores, command, versions}, ...}`` plus, for resumable training,
``optimizer``, ``scheduler``, ``scaler``, ``epoch``, ``step`` and ``best_score``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..classes import CLASS_NAMES, MODALITIES
from ..sensors.normalization import NORMALIZATION


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupted or does not match the model; the message names the file."""


def checkpoint_meta(config: Mapping | None = None, scores: Mapping | None = None) -> dict:
    """The plain metadata stored with every checkpoint."""
    return {
        "classes": list(CLASS_NAMES),
        "modalities": list(MODALITIES),
        "normalization": {name: [list(mean), list(std)] for name, (mean, std) in NORMALIZATION.items()},
        "config": dict(config or {}),
        "scores": dict(scores or {}),
        "command": " ".join(sys.argv),
        "torch_version": str(torch.__version__),
    }


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a temp file in the same folder, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(dict(state), file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
        raise


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``weights_only=True``; missing or corrupted files raise CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: corrupted or not a robustseg checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "architecture" not in checkpoint:
        raise CheckpointError(f"{path}: not a robustseg checkpoint (expected keys 'model' and 'architecture')")
    return checkpoint


def architecture_differences(stored: Mapping, expected: Mapping) -> list[str]:
    """Human-readable differences between two architecture dicts (empty when they match)."""
    return [
        f"{key}: checkpoint has {stored.get(key)!r}, model has {expected.get(key)!r}"
        for key in sorted(set(stored) | set(expected))
        if stored.get(key) != expected.get(key)
    ]


def load_model_state(model: nn.Module, checkpoint: Mapping, path: str | os.PathLike) -> None:
    """Load the checkpoint's weights into ``model`` strictly, after checking the architecture."""
    architecture = getattr(model, "architecture", None)
    if architecture is not None:
        differences = architecture_differences(checkpoint["architecture"], architecture)
        if differences:
            raise CheckpointError(f"{path}: checkpoint is of another architecture: " + "; ".join(differences))
    try:
        model.load_state_dict(checkpoint["model"], strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit the model: {error}") from error


def build_model_from_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the segmentor a checkpoint describes and load its weights; returns (model, checkpoint)."""
    from ..models import build_segmentor

    checkpoint = load_checkpoint(path, map_location)
    architecture = dict(checkpoint["architecture"])
    architecture.pop("num_modalities", None)
    try:
        model = build_segmentor(**architecture)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: unsupported architecture {checkpoint['architecture']} ({error})") from error
    load_model_state(model, checkpoint, path)
    return model, checkpoint
