"""``meta.json``: the record of what a DELIVER-layout data set folder holds, and the checks against it.

``generate_dataset`` writes the frames under ``<root>/.partial/`` bookkeeping and publishes ``meta.json``
last, so a folder without ``meta.json`` is unfinished (or from elsewhere). Every loader reads it first
(:func:`read_meta`): a folder still marked partial, or without ``meta.json``, is refused; so is a split
whose frames on disk are not the ones listed (:func:`check_listed`, naming the first missing or
unlisted file) or whose images are not of the listed size (:func:`check_frame_sizes`, reading only the
PNG headers). A data set from elsewhere (real DELIVER) gets its ``meta.json`` once from
:func:`index_dataset` (``generate_dataset --index ROOT``).

The fields read here: ``width`` and ``height`` (px), ``classes`` (names in class-id order), and
``splits``: split -> list of scenes ``{"scene", "split", "condition", "case", "frames", "frame_ids"
(optional; default "000000".."frames-1"), "event_size" (optional [w, h]; default the image size)}``;
:func:`read_meta` checks their types, naming the file, the scene and the field of a hand-edit gone wrong.
Torch-free, so the scene writer's worker processes can share it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Iterable, Mapping

from . import __version__
from .atomic import write_text_atomic
from .classes import CLASS_NAMES, SPLITS
from .errors import UserError

META_NAME = "meta.json"
#: Bookkeeping of an unfinished ``generate_dataset`` run: the plan and one record per finished scene.
PARTIAL_FOLDER = ".partial"
RGB_FOLDER, RGB_SUFFIX = "img", "_rgb_front.png"
EVENT_FOLDER = "event"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
INDEX_GENERATOR = "robustseg_core.dataset_meta.index_dataset"


class DatasetError(UserError, RuntimeError):
    """A data set file is missing, unreadable or inconsistent; the message names it."""


def read_meta(root: str | os.PathLike) -> dict:
    """The ``meta.json`` of the data set at ``root``; ``DatasetError`` when the folder is unfinished, has none
    or it is unreadable."""
    root = Path(root)
    if (root / PARTIAL_FOLDER).exists():
        state = (f"killed while finishing: {META_NAME} written, {PARTIAL_FOLDER}/ not yet removed"
                 if (root / META_NAME).is_file() else f"no {META_NAME} yet, {PARTIAL_FOLDER}/ present")
        raise DatasetError(f"{root}: an unfinished generate_dataset run ({state}): run the same generate_dataset "
                           "command again to finish it")
    path = root / META_NAME
    if not path.is_file():
        if root.exists() and not root.is_dir():
            raise DatasetError(f"{root}: a file, not a data set folder")
        if not root.is_dir():
            raise DatasetError(f"{root}: no such data set folder")
        raise DatasetError(f"{root}: no {META_NAME}, so what the folder should hold is unknown: an interrupted "
                           f"generate_dataset run (run it again), or a data set from elsewhere (write its "
                           f"{META_NAME} once with: generate_dataset --index {root})")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: unreadable ({error})") from error
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: not a data set record (a JSON {_json_type(meta)}, not an object)")
    missing = [key for key in ("width", "height", "classes", "splits") if key not in meta]
    if missing:
        raise DatasetError(f"{path}: not a data set record (no {', '.join(missing)})")
    _check_records(path, meta)
    return meta


def _json_type(value) -> str:
    """The JSON name of a decoded value's type ("object", "array", "string"...)."""
    names = ((bool, "boolean"), (dict, "object"), (list, "array"), (str, "string"), ((int, float), "number"))
    return next((name for kind, name in names if isinstance(value, kind)), "null")


def _is_count(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_records(path: Path, meta: Mapping) -> None:
    """``DatasetError`` naming ``path``, the scene and the field of the first record the loaders cannot use."""
    for key in ("width", "height"):
        if not _is_count(meta[key], 1):
            raise DatasetError(f"{path}: \"{key}\" is {meta[key]!r}, expected a whole number of pixels >= 1")
    classes = meta["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(name, str) and name for name in classes):
        raise DatasetError(f"{path}: \"classes\" is {classes!r}, expected the class names in class-id order (a "
                           "non-empty list of names)")
    splits = meta["splits"]
    if not isinstance(splits, dict):
        raise DatasetError(f"{path}: \"splits\" is a JSON {_json_type(splits)}, expected an object of split -> "
                           "list of scene records")
    for split, scenes in splits.items():
        if not isinstance(scenes, list):
            raise DatasetError(f"{path}: split {split!r} is a JSON {_json_type(scenes)}, expected a list of "
                               "scene records")
        for index, scene in enumerate(scenes):
            where = f"{path}: split {split!r}, scene {index}"
            if not isinstance(scene, dict):
                raise DatasetError(f"{where}: a JSON {_json_type(scene)}, expected a scene record (object)")
            if isinstance(scene.get("scene"), str) and scene["scene"]:
                where = f"{path}: split {split!r}, scene {scene['scene']!r}"
            for field in ("scene", "condition"):
                if not isinstance(scene.get(field), str) or not scene[field]:
                    problem = "missing" if field not in scene else f"{scene[field]!r}, expected a name"
                    raise DatasetError(f"{where}: field \"{field}\" {problem}")
            if not _is_count(scene.get("frames"), 0):
                problem = "missing" if "frames" not in scene else f"{scene['frames']!r}, expected a count >= 0"
                raise DatasetError(f"{where}: field \"frames\" {problem}")
            frame_ids = scene.get("frame_ids")
            if frame_ids is not None and (not isinstance(frame_ids, list) or len(frame_ids) != scene["frames"]
                                          or not all(isinstance(frame, str) for frame in frame_ids)):
                raise DatasetError(f"{where}: field \"frame_ids\" is not a list of {scene['frames']} frame names "
                                   "(as \"frames\" says)")
            event_size = scene.get("event_size")
            if event_size is not None and (not isinstance(event_size, list) or len(event_size) != 2
                                           or not all(_is_count(side, 1) for side in event_size)):
                raise DatasetError(f"{where}: field \"event_size\" is {event_size!r}, expected [width, height] "
                                   "in pixels")


def _frame_ids(scene: Mapping) -> list[str]:
    return list(scene.get("frame_ids") or (f"{index:06d}" for index in range(scene["frames"])))


def listed_rgb_files(meta: Mapping, split: str) -> dict[Path, Mapping]:
    """Relative path of every RGB file ``meta`` lists for ``split`` -> its scene record."""
    return {Path(RGB_FOLDER, scene["condition"], split, scene["scene"], f"{frame}{RGB_SUFFIX}"): scene
            for scene in meta["splits"].get(split, []) for frame in _frame_ids(scene)}


def check_listed(root: str | os.PathLike, meta: Mapping, split: str, found: Iterable[Path]) -> None:
    """``DatasetError`` naming the first listed RGB file of ``split`` that is missing, or the first one on disk
    that ``meta.json`` does not list (``found``: the RGB files on disk)."""
    root = Path(root)
    listed = listed_rgb_files(meta, split)
    on_disk = {Path(path).relative_to(root) for path in found}
    missing, unlisted = sorted(set(listed) - on_disk), sorted(on_disk - set(listed))
    if missing:
        raise DatasetError(f"{root / missing[0]}: missing; {META_NAME} lists {len(listed)} {split} frames, "
                           f"{len(missing)} of them are not on disk")
    if unlisted:
        raise DatasetError(f"{root / unlisted[0]}: not listed in {root / META_NAME} ({len(unlisted)} such {split} "
                           "frames): files of another run mixed in? Regenerate with --overwrite")


def png_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of a PNG from its header; ``DatasetError`` when the file is not a PNG."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(24)
    except OSError as error:
        raise DatasetError(f"{path}: unreadable ({error.strerror or error})") from error
    if len(header) < 24 or header[:8] != PNG_SIGNATURE or header[12:16] != b"IHDR":
        raise DatasetError(f"{path}: not a PNG image (damaged or truncated?)")
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def check_frame_sizes(meta: Mapping, frames: Iterable[tuple[tuple[str, str, str], Mapping[str, Path]]]) -> None:
    """``DatasetError`` naming the first image whose size is not the data set's (``width`` x ``height``, or
    for event images the scene's ``event_size``). ``frames``: ((condition, split, scene name), {folder: path})
    per frame: a scene record is identified by all three, as one scene name may recur under other conditions
    or splits (real DELIVER)."""
    size = (meta["width"], meta["height"])
    event_sizes = {(scene["condition"], split, scene["scene"]): tuple(scene.get("event_size") or size)
                   for split, scenes in meta["splits"].items() for scene in scenes}
    for key, files in frames:
        for folder, path in files.items():
            allowed = {size, event_sizes.get(tuple(key), size)} if folder == EVENT_FOLDER else {size}
            actual = png_size(path)
            if actual not in allowed:
                raise DatasetError(f"{path}: {actual[0]}x{actual[1]} px, but the data set's {META_NAME} says "
                                   f"{' or '.join(f'{w}x{h}' for w, h in sorted(allowed))}")


def index_dataset(root: str | os.PathLike) -> dict:
    """Write ``meta.json`` for a DELIVER-layout folder from elsewhere: every split's scenes and frames as found,
    the image size (which every RGB image must share) and this code's class list; returns it."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: {'not a folder' if root.exists() else 'no such folder'}; nothing to index")
    if (root / META_NAME).exists() or (root / PARTIAL_FOLDER).exists():
        raise DatasetError(f"{root}: already has {META_NAME} or is an unfinished generate_dataset run; nothing to index")
    splits: dict[str, list[dict]] = {}
    size = None
    for split in SPLITS:
        scenes: dict[tuple[str, str], list[str]] = {}
        for path in sorted((root / RGB_FOLDER).glob(f"*/{split}/*/*{RGB_SUFFIX}")):
            condition, _, scene = path.relative_to(root / RGB_FOLDER).parts[:3]
            scenes.setdefault((condition, scene), []).append(path.name[: -len(RGB_SUFFIX)])
            found = png_size(path)
            if size is None:
                size = found
            elif found != size:
                raise DatasetError(f"{path}: {found[0]}x{found[1]} px, but {size[0]}x{size[1]} before it: not one "
                                   "data set")
        splits[split] = []
        for (condition, scene), frame_ids in scenes.items():
            events = sorted((root / EVENT_FOLDER / condition / split / scene).glob("*.png"))
            splits[split].append({"scene": scene, "split": split, "condition": condition,
                                  "frames": len(frame_ids), "frame_ids": frame_ids,
                                  "event_size": list(png_size(events[0])) if events else None})
    if size is None:
        raise DatasetError(f"{root}: no {RGB_FOLDER}/<condition>/<split>/<scene>/*{RGB_SUFFIX} files to index")
    meta = {"generator": INDEX_GENERATOR, "version": __version__, "indexed": time.strftime("%Y-%m-%d %H:%M:%S"),
            "width": size[0], "height": size[1], "classes": list(CLASS_NAMES), "splits": splits}
    write_text_atomic(root / META_NAME, json.dumps(meta, indent=2) + "\n")
    return meta
