"""The output folder of ``generate_dataset``: started, resumed after an interruption, complete, or refused.

While scenes are being written the folder holds ``.partial/plan.json`` (what the run writes: package
version, seed, drive config and scene list) and one ``.partial/<scene>.json`` per finished scene;
``meta.json`` is published last, then ``.partial/`` is renamed to ``.partial-done/`` and removed, so
loaders (``robustseg_core.dataset_meta.read_meta``) refuse an unfinished folder and a run killed while
the bookkeeping is removed leaves a complete data set. Opening a folder for a plan:

* empty or new, or holding only a ``.partial/`` without plan and scene records (a run killed as it
  started): a fresh run;
* unfinished with the same plan: resumed, the finished scenes kept, temporary files of killed writers
  deleted; unfinished with another plan (another package version included): refused, naming the
  differences;
* ``meta.json`` next to ``.partial/`` or ``.partial-done/`` (a run killed after publishing): the
  bookkeeping is removed and the folder opened as complete;
* complete with the same plan: nothing to write; with another plan (say another image size): refused;
* anything else in a non-empty folder: refused.

``overwrite`` clears the folder first, but only of what the generator writes (its data folders,
``meta.json``, ``.partial/``, ``.partial-done/``): a folder holding anything else is refused, naming it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from robustseg_core.atomic import remove_stale_temporaries, write_text_atomic
from robustseg_core.dataset_meta import META_NAME, PARTIAL_FOLDER
from robustseg_core.errors import UsageError
from robustseg_core.output_folder import LOCK_NAME

PLAN_NAME = "plan.json"
#: ``.partial/`` renamed once ``meta.json`` is written, then removed: garbage wherever it is found.
DONE_FOLDER = PARTIAL_FOLDER + "-done"


class DatasetFolderError(UsageError):
    """The output folder holds something this run may not write into; the message says what and how to proceed."""


def plan_from_meta(meta: dict) -> dict:
    """The plan a complete data set's ``meta.json`` was written for (the form of ``SceneJob`` lists)."""
    return {"seed": meta.get("seed"), "drive_config": meta.get("drive_config"),
            "scenes": [[scene["split"], scene["scene"], scene["seed"], scene["condition"], scene["case"],
                        scene["frames"]] for scenes in meta.get("splits", {}).values() for scene in scenes]}


def plan_differences(old: dict, new: dict) -> list[str]:
    """What differs between two plans: package version (when ``new`` has one: an unfinished run's plan), seed,
    drive settings (image size...), scene counts or the scene list."""
    differences = [f"robustseg_core version {old.get('version')} -> {new['version']}"] \
        if "version" in new and old.get("version") != new["version"] else []
    differences += [f"seed {old.get('seed')} -> {new['seed']}"] if old.get("seed") != new["seed"] else []
    old_config = old.get("drive_config") or {}
    differences += [f"{key} {old_config.get(key)} -> {value}" for key, value in new["drive_config"].items()
                    if old_config.get(key) != value]
    old_scenes, new_scenes = old.get("scenes") or [], new["scenes"]
    for split in sorted({scene[0] for scene in old_scenes + new_scenes}):
        counts = [sum(1 for scene in scenes if scene[0] == split) for scenes in (old_scenes, new_scenes)]
        if counts[0] != counts[1]:
            differences.append(f"{split} scenes {counts[0]} -> {counts[1]}")
    if not differences and old_scenes != new_scenes:
        differences.append("the scenes (frames per scene, conditions or failure cases)")
    return differences


class DatasetFolder:
    """``root`` as the output of one plan; ``data_folders``: the top-level folders the generator writes."""

    def __init__(self, root: str | os.PathLike, data_folders: Iterable[str]) -> None:
        self.root = Path(root)
        self.owned = {*data_folders, META_NAME, PARTIAL_FOLDER, DONE_FOLDER}
        self.partial = self.root / PARTIAL_FOLDER

    def _entries(self) -> list[str]:
        return sorted(entry.name for entry in self.root.iterdir() if entry.name != LOCK_NAME) \
            if self.root.is_dir() else []

    def clear(self) -> None:
        """Delete what the generator writes; ``DatasetFolderError`` naming anything else the folder holds."""
        foreign = [name for name in self._entries() if name not in self.owned]
        if foreign:
            raise DatasetFolderError(f"--overwrite clears only what generate_dataset writes, but {self.root} also "
                                     f"holds {', '.join(foreign[:5])}: remove them yourself or choose another folder")
        for name in self._entries():
            path = self.root / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

    def open(self, plan: dict, overwrite: bool) -> dict[str, dict] | None:
        """Prepare the folder for ``plan`` (JSON-compatible); returns the records of the scenes already written
        (empty for a fresh run), or None when the folder already holds the complete data set."""
        plan = json.loads(json.dumps(plan))
        if overwrite:
            self.clear()
        entries = self._entries()
        if META_NAME in entries and PARTIAL_FOLDER in entries:  # killed after publishing (meta.json comes last)
            self._remove_bookkeeping()
            entries = self._entries()
        if DONE_FOLDER in entries:
            shutil.rmtree(self.root / DONE_FOLDER)
            entries = self._entries()
        if not entries:
            self.partial.mkdir(parents=True)
            write_text_atomic(self.partial / PLAN_NAME, json.dumps(plan) + "\n")
            return {}
        if PARTIAL_FOLDER in entries:
            return self._resume(plan)
        if META_NAME in entries:
            try:
                stored = plan_from_meta(json.loads((self.root / META_NAME).read_text()))
            except (ValueError, KeyError, TypeError):
                stored = {}
            differences = plan_differences(stored, {key: value for key, value in plan.items() if key != "version"})
            if not differences:
                return None
            raise DatasetFolderError(f"{self.root} holds a data set made with other arguments ({'; '.join(differences)}); "
                                     "pass --overwrite to replace it, or choose another folder")
        raise DatasetFolderError(f"{self.root} is not empty and holds no data set of generate_dataset "
                                 f"({', '.join(entries[:5])}); choose an empty folder")

    def _resume(self, plan: dict) -> dict[str, dict]:
        records = [path for path in self.partial.glob("*.json") if path.name != PLAN_NAME]
        if not (self.partial / PLAN_NAME).exists() and not records:  # killed before its plan was written
            remove_stale_temporaries(self.root, recursive=True)
            write_text_atomic(self.partial / PLAN_NAME, json.dumps(plan) + "\n")
            return {}
        try:
            stored = json.loads((self.partial / PLAN_NAME).read_text())
        except (OSError, ValueError):
            stored = {}
        differences = plan_differences(stored, plan)
        if differences:
            raise DatasetFolderError(f"{self.root} holds an unfinished run with other arguments "
                                     f"({'; '.join(differences)}): run that command again to finish it, or pass "
                                     "--overwrite to start this one")
        remove_stale_temporaries(self.root, recursive=True)
        done = {}
        for path in records:
            record = json.loads(path.read_text())
            done[record["scene"]] = record
        return done

    def record_scene(self, record: dict) -> None:
        """Note that scene ``record["scene"]`` is fully written (after its last image)."""
        write_text_atomic(self.partial / f"{record['scene']}.json", json.dumps(record) + "\n")

    def publish(self, meta: dict) -> None:
        """Write ``meta.json``, then remove the ``.partial/`` bookkeeping: the data set is complete."""
        write_text_atomic(self.root / META_NAME, json.dumps(meta, indent=2, sort_keys=False) + "\n")
        self._remove_bookkeeping()

    def _remove_bookkeeping(self) -> None:
        """Rename ``.partial/`` (one atomic step: a complete ``meta.json`` never stays next to it), then delete it."""
        done = self.root / DONE_FOLDER
        if done.exists():
            shutil.rmtree(done)
        os.replace(self.partial, done)
        shutil.rmtree(done)
