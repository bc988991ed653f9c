"""A training run's output folder across interruptions: what a resume must check before it trains on.

The engine writes, per epoch, the log rows, then ``last.pt``, then ``best.pt`` when the score improved,
each atomically. Whatever instant a run is killed at, ``last.pt`` holds the last completed epoch, and
``best.pt`` the best epoch that ``last.pt`` records or, when the kill fell between the two writes, the
previous best: the resume rewrites it from ``last.pt``, whose weights are that epoch's. The epoch in
progress is recomputed from ``last.pt`` (every epoch's randomness derives from the seed and the epoch),
so a resume loses nothing and ends with the weights of an uninterrupted run. This module holds the
checks around that:

* :func:`resume_checkpoint`: the checkpoint to resume from, refusing a fresh start over an existing run
  and a resume whose config differs in a key that changes what is trained (:data:`SAFE_ON_RESUME` may
  change with ``--allow-config-change``; the teacher and the data set, :data:`INPUT_FILES`, are compared
  by the digests ``last.pt`` records, so a run moved with them resumes and one whose inputs changed does not);
* :func:`ensure_best_checkpoint`: ``best.pt`` rewritten from ``last.pt`` when it lacks the best epoch;
* :func:`finite_checkpoint`: the newest checkpoint whose weights are all finite, for a divergence message.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ..errors import Interrupted, UsageError
from ..models.checkpoint import CheckpointError, file_sha256, load_checkpoint, save_checkpoint
from .config import ConfigError

#: Config keys a resumed run may change (with ``--allow-config-change``): the epoch budget (the schedule
#: follows it), how often it validates and what it logs. Every other key changes what is trained.
SAFE_ON_RESUME = frozenset({"train.epochs", "train.eval_every", "train.log_every", "train.grad_norm_every",
                            "train.tensorboard"})
#: Keys never compared: where the run and its exported encoder live (a moved folder resumes from its new place).
NOT_COMPARED = frozenset({"train.output_dir", "pretrain.encoder_out"})
#: ``meta.json`` fields that change when the same data set is indexed or generated again (a time, a version).
VOLATILE_META_KEYS = ("indexed", "version")


def _file_digest(value: str | Path) -> str | None:
    path = Path(value)
    return file_sha256(path) if path.is_file() else None


def _data_set_digest(value: str | Path) -> str | None:
    """SHA-256 of the data set's ``meta.json`` (its frames, splits, size, classes, generator settings) in a
    canonical form without :data:`VOLATILE_META_KEYS`."""
    try:
        meta = json.loads((Path(value) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    canonical = {key: item for key, item in meta.items() if key not in VOLATILE_META_KEYS}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


#: Keys naming an input, compared by content (the digest that ``last.pt`` records), not by path -> how the
#: digest is made. A run moved with its teacher or data set (an ablation folder copied to another machine)
#: resumes; a teacher trained further or a data set made differently at the same path is refused.
INPUT_FILES = {"teacher.checkpoint": _file_digest, "data.root": _data_set_digest}
RESUMABLE_KEYS = ("optimizer", "scheduler", "scaler", "epoch", "best")
#: The part of a resumable checkpoint that ``best.pt`` holds.
BEST_KEYS = ("model", "architecture", "meta", "epoch")


class TrainingInterrupted(Interrupted):
    """Ctrl-C during training: the message says what is saved and the command that resumes."""


def resume_command(prog: str, argv: Sequence[str]) -> str:
    """The command line that resumes the run of ``prog argv``: the same arguments with ``--resume auto``."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--resume":
            skip = True
        elif not item.startswith("--resume="):
            kept.append(item)
    return shlex.join([prog, *kept, "--resume", "auto"])


def run_stage(config: Mapping) -> str:
    """The stage a training config is of: "student" (it has a ``student`` section), "pretrain_encoder" (a
    ``pretrain`` section) or "teacher"."""
    return "student" if config.get("student") else "pretrain_encoder" if config.get("pretrain") else "teacher"


def check_stage(checkpoint: Mapping, path: Path, expected: str, use: str) -> None:
    """``CheckpointError`` when the checkpoint at ``path`` records the config of another stage than ``expected``
    (the training command that made it: ``train_teacher``, ``train_student``, ``pretrain_encoder``); a checkpoint
    without a config (of an older version, or made elsewhere) passes. ``use``: what it was given for."""
    config = (checkpoint.get("meta") or {}).get("config")
    if config and run_stage(config) != expected:
        made_by = {"student": "train_student", "pretrain_encoder": "pretrain_encoder", "teacher": "train_teacher"}
        raise CheckpointError(f"{path}: a {run_stage(config)} checkpoint (made by {made_by[run_stage(config)]}), "
                              f"not a {expected}'s: {use}")


def recorded_input_digests(checkpoint: Mapping) -> dict[str, str]:
    """``section.key`` -> SHA-256 of the inputs (:data:`INPUT_FILES`) the run that wrote ``checkpoint`` read: from
    its metadata (``best.pt`` too), or the top level of a ``last.pt`` of an older version; {} when not recorded."""
    return dict((checkpoint.get("meta") or {}).get("input_sha256") or checkpoint.get("input_sha256") or {})


def _input_digest(name: str, value: object) -> str | None:
    """The digest of input ``name`` with value ``value``; None when there is nothing to read."""
    return INPUT_FILES[name](value) if isinstance(value, (str, Path)) else None


def input_file_digests(config: Mapping) -> dict[str, str]:
    """``section.key`` -> SHA-256, for each of :data:`INPUT_FILES` whose file exists."""
    digests = {}
    for name in INPUT_FILES:
        section, key = name.split(".")
        digest = _input_digest(name, config.get(section, {}).get(key))
        if digest is not None:
            digests[name] = digest
    return digests


def _input_file_difference(name: str, old: object, new: object, stored_digests: Mapping[str, str]) -> tuple | None:
    """(old, new) when input ``name`` differs: by content when the checkpoint recorded its digest (a file
    moved is the same, a file replaced in place is not), else by path."""
    if name not in stored_digests:
        return (old, new) if old != new else None
    digest = _input_digest(name, new)
    if digest == stored_digests[name]:
        return None
    return (f"{old} (sha256 {stored_digests[name][:12]})", f"{new} ({f'sha256 {digest[:12]}' if digest else 'no file'})")


def config_differences(stored: Mapping, current: Mapping, stored_digests: Mapping[str, str] | None = None
                       ) -> dict[str, tuple]:
    """``section.key`` -> (stored value, current value) for every compared key whose value differs; a key
    the stored config lacks (written by an older version) counts only when the current value is not None.
    An input file (:data:`INPUT_FILES`) is compared by content when ``stored_digests`` has its digest."""
    differences = {}
    for section, values in current.items():
        for key, value in values.items():
            name = f"{section}.{key}"
            old = stored.get(section, {}).get(key) if isinstance(stored.get(section), Mapping) else None
            if name in INPUT_FILES:
                difference = _input_file_difference(name, old, value, stored_digests or {})
                if difference is not None:
                    differences[name] = difference
            elif name not in NOT_COMPARED and old != value:
                differences[name] = (old, value)
    return differences


def check_resume_config(stored: Mapping, current: Mapping, path: Path, allow_change: bool,
                        stored_digests: Mapping[str, str] | None = None) -> list[str]:
    """``ConfigError`` naming the keys in which ``current`` differs from the config stored in the checkpoint
    at ``path`` (input files compared by ``stored_digests``), unless every one is in ``SAFE_ON_RESUME`` and
    ``allow_change``; returns the changes."""
    differences = config_differences(stored, current, stored_digests)
    changes = [f"{name}: {old!r} -> {new!r}" for name, (old, new) in sorted(differences.items())]
    unsafe = sorted(set(differences) - SAFE_ON_RESUME)
    if unsafe:
        raise ConfigError(f"{path}: cannot resume with {', '.join(unsafe)} changed ({'; '.join(changes)}): that changes "
                          f"what is trained. Resume with the run's config ({path.parent / 'config.yaml'}) or start a "
                          f"new output folder; only {', '.join(sorted(SAFE_ON_RESUME))} may change on resume")
    if changes and not allow_change:
        raise ConfigError(f"{path}: the config differs from the run's: {'; '.join(changes)}. These keys may change "
                          "on resume: pass --allow-config-change to resume with them")
    return changes


def resume_checkpoint(output_dir: Path, resume: str | None, config: Mapping, allow_change: bool,
                      map_location: torch.device) -> tuple[dict | None, Path | None, list[str]]:
    """The checkpoint a run continues from, its path and the config changes (``key: old -> new``) it is
    resumed with; (None, None, []) for a fresh start.

    ``resume``: None (fresh; refused over an existing ``last.pt``), "auto" (``<output_dir>/last.pt`` when it
    exists) or a checkpoint path. Checks that it is resumable and that the config may resume it.
    """
    last_path = output_dir / "last.pt"
    if resume in (None, "auto") and not last_path.exists() and (output_dir / "best.pt").exists():
        raise UsageError(f"{output_dir} holds a best.pt but no last.pt (a run continued into it from another "
                         "checkpoint stopped before its first epoch, or last.pt was removed): continue with "
                         "--resume <that checkpoint>, or choose another train.output_dir")
    if resume is None:
        if last_path.exists():
            raise UsageError(f"{output_dir} already holds a run ({last_path}); continue it with --resume auto, or "
                             "choose another train.output_dir")
        return None, None, []
    path = last_path if resume == "auto" else Path(resume)
    if resume == "auto" and not path.exists():
        return None, None, []
    checkpoint = load_checkpoint(path, map_location)
    missing = [key for key in RESUMABLE_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: not resumable (no {', '.join(missing)}); resume from last.pt")
    check_stage(checkpoint, path, run_stage(config), "a run continues with the command that started it")
    if last_path.exists() and path.resolve() != last_path.resolve():
        raise UsageError(f"{output_dir} already holds a run ({last_path}): resuming {path} there would overwrite it; "
                         "choose another train.output_dir, or continue that run with --resume auto")
    changes = check_resume_config(checkpoint.get("meta", {}).get("config", {}), config, path, allow_change,
                                  recorded_input_digests(checkpoint))
    return checkpoint, path, changes


def _checkpoint_epoch(path: Path) -> int | None:
    try:
        return load_checkpoint(path)["epoch"]
    except CheckpointError:
        return None


def check_resumed_schedule(checkpoint: Mapping, path: Path, steps_per_epoch: int, epochs: int) -> None:
    """``ConfigError`` when a run resumed from ``checkpoint`` (at ``path``) would not continue its schedule:
    another number of steps per epoch (the data set's size or the number of processes changed; the learning
    rate schedule counts steps), or a ``train.epochs`` below the epochs it has already trained."""
    saved = checkpoint.get("steps_per_epoch")  # absent in checkpoints of older versions
    if saved is not None and saved != steps_per_epoch:
        raise ConfigError(f"{path}: the run made {saved} steps per epoch and would now make {steps_per_epoch} (another "
                          "data set size or number of processes); its learning-rate schedule counts steps: resume "
                          "with the run's data and processes, or start a new output folder")
    trained = checkpoint["epoch"] + 1
    if epochs < trained:
        raise ConfigError(f"{path}: the run has trained {trained} epochs, more than train.epochs={epochs}; resume "
                          f"with train.epochs >= {trained}, or use its best.pt as it is")


def ensure_best_checkpoint(best_path: Path, resumed: Mapping, resumed_path: Path) -> None:
    """Make ``best.pt`` hold the best epoch that ``resumed`` (the checkpoint at ``resumed_path``) records.

    When it does not: if that epoch is ``resumed``'s own (a kill between the two writes, a kill mid-write of
    ``best.pt``, or a run continued in a new folder), ``best.pt`` is written from ``resumed``; else from the
    ``best.pt`` beside ``resumed_path`` when that holds it (a run continued in a new folder); else its weights
    are gone (the file was deleted or damaged): a note says so.
    """
    best_epoch = resumed["best"].get("epoch")
    if best_epoch is None or (best_path.exists() and _checkpoint_epoch(best_path) == best_epoch):
        return
    if best_epoch == resumed["epoch"]:
        save_checkpoint(best_path, {key: resumed[key] for key in BEST_KEYS})
        print(f"restored {best_path} (epoch {best_epoch}, the best so far) from {resumed_path}", flush=True)
        return
    beside = resumed_path.parent / "best.pt"
    if beside.resolve() != best_path.resolve() and beside.exists() and _checkpoint_epoch(beside) == best_epoch:
        save_checkpoint(best_path, load_checkpoint(beside))
        print(f"copied {beside} (epoch {best_epoch}, the best so far) to {best_path}", flush=True)
        return
    print(f"note: {best_path} does not hold epoch {best_epoch}, the best epoch {resumed_path} records, and its "
          "weights are not kept anywhere else; best.pt is written again when the score improves",
          file=sys.stderr, flush=True)


def _all_finite(path: Path) -> bool:
    try:
        state = load_checkpoint(path)["model"]
    except CheckpointError:
        return False
    return all(torch.isfinite(tensor).all() for tensor in state.values() if tensor.is_floating_point())


def finite_checkpoint(paths: Sequence[Path]) -> str:
    """The first of ``paths`` that loads and holds only finite weights, or "none written yet"."""
    return next((str(path) for path in paths if path.exists() and _all_finite(path)), "none written yet")
