"""Checkpoints and the device they run on: what training writes and serving (inference, evaluation) reads.

A checkpoint is a dict of tensors and plain metadata, written atomically, read with ``weights_only=True``.
Layout: ``{"model": state_dict, "architecture": {...}, "meta": {classes, modalities,
normalisation, config, scores, command, versions}, "epoch"}`` plus, for resumable training
(``last.pt``), ``optimizer``, ``scheduler``, ``scaler`` and ``best`` (the best validation metrics).

Nothing here imports ``robustseg_core.training``: serving depends on the model, never on training.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..atomic import write_bytes_atomic
from ..classes import CLASS_NAMES, MODALITIES
from ..errors import UsageError, UserError, archive_damage, torch_load_failure
from ..sensors.normalization import NORMALIZATION
from . import build_segmentor
from .pretrained import state_dict_differences


class DeviceError(UsageError, RuntimeError):
    """A device that does not exist here was asked for."""


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given ("cpu", "cuda", "cuda:N").

    Raises ``DeviceError`` (a ``RuntimeError``) for a name torch does not know, a CUDA device when CUDA is
    not available, or a CUDA index this machine does not have.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise DeviceError(f"device {device!r}: not a device name (auto, cpu, cuda or cuda:N)") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} requested but CUDA is not available")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise DeviceError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"numbered from 0")
    return resolved


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, corrupted or does not match the model; the message names the file."""


def checkpoint_meta(config: Mapping | None = None, scores: Mapping | None = None,
                    modalities: Sequence[str] = MODALITIES, command: str = "") -> dict:
    """The plain metadata stored with every checkpoint (``modalities``: the model's order; ``command``: the
    command line that made it, by default this process's)."""
    return {
        "classes": list(CLASS_NAMES),
        "modalities": list(modalities),
        "normalization": {name: [list(mean), list(std)] for name, (mean, std) in NORMALIZATION.items()},
        "config": dict(config or {}),
        "scores": dict(scores or {}),
        "command": command or " ".join(sys.argv),
        "torch_version": str(torch.__version__),
    }


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of the file at ``path`` (hex): a checkpoint's identity wherever it is moved."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a temp file in the same folder, fsync, then rename. Serialised
    in memory first, so a failed write (no space, file size limit) is an ``OSError`` naming ``path``."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    write_bytes_atomic(path, buffer.getbuffer())


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``weights_only=True``; missing or corrupted files raise CheckpointError."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a checkpoint file (a run folder holds best.pt and last.pt)")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    damage = archive_damage(path)
    if damage:
        raise CheckpointError(f"{path}: a damaged checkpoint ({damage}); copy or export it again")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"{path}: corrupted or not a robustseg checkpoint ({torch_load_failure(path, error)})") from error
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "architecture" not in checkpoint:
        raise CheckpointError(f"{path}: not a robustseg checkpoint (expected keys 'model' and 'architecture')")
    return checkpoint


#: Architecture entries that change training only, not which weights fit: ignored when comparing.
TRAINING_ONLY_ARCHITECTURE_KEYS = frozenset({"drop_path_rate"})


def architecture_differences(stored: Mapping, expected: Mapping) -> list[str]:
    """Human-readable differences between two architecture dicts (empty when they match)."""
    return [
        f"{key}: checkpoint has {stored.get(key)!r}, model has {expected.get(key)!r}"
        for key in sorted((set(stored) | set(expected)) - TRAINING_ONLY_ARCHITECTURE_KEYS)
        if stored.get(key) != expected.get(key)
    ]


def load_model_state(model: nn.Module, checkpoint: Mapping, path: str | os.PathLike) -> None:
    """Load the checkpoint's weights into ``model`` strictly, after checking the architecture."""
    architecture = getattr(model, "architecture", None)
    if architecture is not None:
        differences = architecture_differences(checkpoint["architecture"], architecture)
        if differences:
            raise CheckpointError(f"{path}: checkpoint is of another architecture: " + "; ".join(differences))
    problems = state_dict_differences(model.state_dict(), checkpoint["model"])
    if problems:
        preset = f" ({architecture['preset']})" if architecture and "preset" in architecture else ""
        raise CheckpointError(f"{path}: weights do not fit the model{preset}: " + "; ".join(problems))
    model.load_state_dict(checkpoint["model"], strict=True)


def normalization_differences(stored: Mapping | None, modalities: Sequence[str]) -> list[str]:
    """How a model's stored per-modality (mean, std) differ from what the sensor encoders apply now (one line
    per modality; empty when they match). ``stored`` None: nothing recorded, nothing to compare."""
    if stored is None:
        return []
    differences = []
    for modality in modalities:
        current = NORMALIZATION.get(modality)
        values = stored.get(modality)
        matches = (current is not None and values is not None and len(values) == 2 and all(
            len(got) == len(want) and all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) for a, b in zip(got, want))
            for got, want in zip(values, current)))
        if not matches:
            differences.append(f"modality {modality!r} was trained with normalisation (mean, std) {values}, but the "
                               f"sensor encoders apply {[list(part) for part in current] if current else None}")
    return differences


def check_normalization(checkpoint: Mapping, path: str | os.PathLike) -> None:
    """The checkpoint's stored per-modality (mean, std) must be the ones the sensor encoders apply now,
    or every input would be scaled differently from training. Checkpoints without the entry pass."""
    differences = normalization_differences(checkpoint.get("meta", {}).get("normalization"),
                                            checkpoint["architecture"].get("modalities", ()))
    if differences:
        raise CheckpointError(f"{path}: " + "; ".join(differences))


def checkpoint_classes(checkpoint: Mapping, path: str | os.PathLike) -> list[str]:
    """The class names a checkpoint predicts, in class-id order (this code's for checkpoints without them);
    ``CheckpointError`` when their number is not the network's output count or the stored modality order
    is not the network's."""
    meta, architecture = checkpoint.get("meta", {}), checkpoint["architecture"]
    classes = list(meta.get("classes", CLASS_NAMES))
    if "num_classes" in architecture and len(classes) != architecture["num_classes"]:
        raise CheckpointError(f"{path}: names {len(classes)} classes but the network predicts "
                              f"{architecture['num_classes']}")
    if "modalities" in meta and "modalities" in architecture and list(meta["modalities"]) != list(architecture["modalities"]):
        raise CheckpointError(f"{path}: its metadata says modality order {list(meta['modalities'])}, the network "
                              f"was built for {list(architecture['modalities'])}")
    return classes


def build_model_from_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the segmentor a checkpoint describes (its input normalisation, class count and modality order
    checked) and load its weights; returns (model, checkpoint)."""
    checkpoint = load_checkpoint(path, map_location)
    check_normalization(checkpoint, path)
    checkpoint_classes(checkpoint, path)
    architecture = dict(checkpoint["architecture"])
    architecture.pop("num_modalities", None)
    try:
        model = build_segmentor(**architecture)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: unsupported architecture {checkpoint['architecture']} ({error})") from error
    load_model_state(model, checkpoint, path)
    return model, checkpoint
