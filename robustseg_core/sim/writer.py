"""Write simulated drives as a data set in DELIVER's exact on-disk layout.

::

    <root>/img/<condition>/<split>/<scene>/<frame>_rgb_front.png        RGB, 8-bit, 3 channels
    <root>/hha/<condition>/<split>/<scene>/<frame>_depth_front.png      HHA (sensors.depth.depth_to_hha)
    <root>/depth/<condition>/<split>/<scene>/<frame>_depth_front.png    CARLA 24-bit raw depth (encode_depth_png)
    <root>/lidar/<condition>/<split>/<scene>/<frame>_lidar_front.png    sensors.lidar.lidar_to_image
    <root>/event/<condition>/<split>/<scene>/<frame>_event_front.png    sensors.events.events_to_frame
                                                                         (half size for eventlowres scenes)
    <root>/semantic/<condition>/<split>/<scene>/<frame>_semantic_front.png  RGBA: R = class id + 1
                                                                         (0 = unlabeled), G = B = 0, A = 255
    <root>/meta.json

``<frame>`` is the zero-padded 6-digit frame number, ``<scene>`` e.g. ``SIM_0007`` or, for a
sensor-failure scene, ``SIM_0012_motionblur`` (DELIVER loaders select failure cases by substring).
PNG files hold RGB(A) in the standard order. Every file is written to a temporary name in its
folder and renamed into place, so an interrupted run leaves no partial PNG; ``meta.json`` comes last
and a re-run of the same command resumes an interrupted run (``dataset_folder``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np

from robustseg_core import __version__
from robustseg_core.atomic import write_bytes_atomic
from robustseg_core.classes import CLASS_NAMES, NUM_CLASSES, SPLITS
from robustseg_core.dataset_meta import META_NAME
from robustseg_core.errors import Interrupted
from robustseg_core.output_folder import FolderLock
from robustseg_core.sensors.camera import CameraIntrinsics
from robustseg_core.sim.dataset_folder import DatasetFolder
from robustseg_core.sim.drive import Drive, DriveConfig, encode_frame
from robustseg_core.sim.randomization import resolve
from robustseg_core.sim.sensors_sim import CONDITIONS, FAILURES

#: folder -> (file suffix, key of ``encode_frame``'s output)
MODALITY_FILES = {
    "img": ("_rgb_front.png", "rgb"),
    "hha": ("_depth_front.png", "hha"),
    "depth": ("_depth_front.png", "depth_png"),
    "lidar": ("_lidar_front.png", "lidar"),
    "event": ("_event_front.png", "event"),
    "semantic": ("_semantic_front.png", "semantic"),
}
GENERATOR_NAME = "robustseg_core.sim"


@dataclass(frozen=True)
class SceneJob:
    """One scene of the data set: a drive rendered for ``frames`` consecutive frames."""

    split: str
    name: str
    seed: int
    condition: str
    failure: str | None
    frames: int

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"unknown split {self.split!r}; expected one of {SPLITS}")
        if self.condition not in CONDITIONS:
            raise ValueError(f"unknown condition {self.condition!r}; expected one of {CONDITIONS}")
        if self.failure is not None and self.failure not in FAILURES:
            raise ValueError(f"unknown failure case {self.failure!r}")
        if self.failure is not None and self.failure not in self.name:
            raise ValueError(f"scene name {self.name!r} must contain its failure case {self.failure!r}")


def scene_name(number: int, failure: str | None) -> str:
    """``SIM_0007`` or ``SIM_0012_motionblur``."""
    return f"SIM_{number:04d}" + (f"_{failure}" if failure else "")


def frame_path(root: str, folder: str, job: SceneJob, frame: int) -> str:
    """Path of one modality file of one frame."""
    suffix = MODALITY_FILES[folder][0]
    return os.path.join(root, folder, job.condition, job.split, job.name, f"{frame:06d}{suffix}")


def semantic_rgba(labels: np.ndarray) -> np.ndarray:
    """Class ids uint8 [H, W] (255 = unlabeled) -> DELIVER semantic RGBA [H, W, 4]."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be [H, W], got {labels.shape}")
    stored = np.where(labels < NUM_CLASSES, labels.astype(np.int32) + 1, 0).astype(np.uint8)
    rgba = np.zeros(labels.shape + (4,), dtype=np.uint8)
    rgba[..., 0] = stored
    rgba[..., 3] = 255
    return rgba


def write_png(path: str, image: np.ndarray) -> None:
    """Write an RGB, RGBA or grey uint8 image atomically (temporary file in the same folder + rename)."""
    if image.dtype != np.uint8:
        raise ValueError(f"PNG images must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path}")
    write_bytes_atomic(path, encoded.tobytes())


def read_png(path: str) -> np.ndarray:
    """Read a PNG written by ``write_png`` back in RGB(A) order (unchanged bit depth and channels)."""
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FileNotFoundError(path)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def write_scene(root: str, job: SceneJob, config: DriveConfig) -> dict:
    """Render and write all frames of ``job``; returns the scene's metadata."""
    drive = Drive(job.seed, replace(config, condition=job.condition, failure=job.failure))
    for frame in drive.frames(job.frames):
        images = encode_frame(frame)
        images["semantic"] = semantic_rgba(images.pop("labels"))
        for folder, (_, key) in MODALITY_FILES.items():
            write_png(frame_path(root, folder, job, frame.index), images[key])
    return {
        "scene": job.name, "split": job.split, "condition": job.condition, "case": job.failure, "seed": job.seed,
        "frames": job.frames, "district": drive.scene.style.district,
        "camera_height_m": round(drive.camera_height_m, 4),
        "hfov_deg": round(drive.intrinsics.hfov_deg, 4),
        "T_cam_lidar": np.round(drive.T_cam_lidar, 6).tolist(),
        "event_size": list(drive.event_size),
    }


def _write_scene_task(args: tuple[str, SceneJob, DriveConfig]) -> dict:
    return write_scene(*args)


#: ``prctl`` option: the signal the kernel sends a process when its parent dies (Linux).
PR_SET_PDEATHSIG = 1


def _init_worker(parent_pid: int) -> None:
    """A scene writer process: one OpenCV thread (one process per core already), and killed with its parent
    (Linux), so that a ``generate_dataset`` killed with SIGKILL leaves no writer in a folder it no longer locks."""
    cv2.setNumThreads(1)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the kernel was told
        os._exit(1)


def write_dataset(root: str, jobs: list[SceneJob], config: DriveConfig, *, seed: int, workers: int = 1,
                  progress: Callable[[int, int, int, float], None] | None = None, overwrite: bool = False,
                  note: Callable[[str], None] | None = None) -> dict:
    """Write every scene of ``jobs`` under ``root`` (``workers`` processes) and then ``meta.json``.

    The folder is locked while it is written and prepared by ``dataset_folder.DatasetFolder``: an
    interrupted run of the same plan resumes (its finished scenes kept), a complete one is left as it is,
    anything else is refused unless ``overwrite`` (which clears it first). ``note(text)`` hears what was
    found (resumed, already complete). ``progress(scenes_done, scenes_total, frames_done, elapsed_s)`` is
    called after each scene written. Ctrl-C raises ``Interrupted`` saying how to finish. Returns the
    metadata of ``meta.json``.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError("scene names must be unique")
    drive_config = asdict(config)
    drive_config.pop("condition")
    drive_config.pop("failure")
    plan = {"version": __version__, "seed": seed, "drive_config": drive_config,
            "scenes": [[job.split, job.name, job.seed, job.condition, job.failure, job.frames] for job in jobs]}
    folder = DatasetFolder(root, MODALITY_FILES)
    with FolderLock(root):
        results = folder.open(plan, overwrite)
        if results is None:
            if note:
                note(f"{root} already holds this data set; nothing to write")
            with open(os.path.join(root, META_NAME), encoding="utf-8") as handle:
                return json.load(handle)
        if results and note:
            note(f"resuming {root}: {len(results)} of {len(jobs)} scenes were already written")
        pending = [job for job in jobs if job.name not in results]
        start = time.perf_counter()
        frames_done = 0
        try:
            for result in _written_scenes(root, pending, config, workers):
                folder.record_scene(result)
                results[result["scene"]] = result
                frames_done += result["frames"]
                if progress:
                    progress(len(results), len(jobs), frames_done, time.perf_counter() - start)
        except KeyboardInterrupt:
            raise Interrupted(f"{root} is unfinished ({len(results)} of {len(jobs)} scenes written); the same "
                              "command finishes it") from None
        meta = {
            "generator": GENERATOR_NAME,
            "version": __version__,
            "seed": seed,
            "width": config.width,
            "height": config.height,
            "frame_rate": config.frame_rate,
            **_shared_intrinsics(config),
            "drive_config": drive_config,
            "classes": list(CLASS_NAMES),
            "layout": {folder_name: suffix for folder_name, (suffix, _) in MODALITY_FILES.items()},
            "splits": {split: [results[job.name] for job in jobs if job.split == split] for split in SPLITS},
        }
        folder.publish(meta)
    return meta


def _shared_intrinsics(config: DriveConfig) -> dict:
    """``{"intrinsics": {width, height, fx, fy, cx, cy}}`` (px) of the camera every scene shares; empty when each
    scene draws its own field of view (a randomisation that widens it: see each scene's ``hfov_deg``)."""
    if resolve(config.randomization) is not None:  # as Drive: every widened randomisation draws the hfov
        return {}
    intrinsics = CameraIntrinsics.from_fov(config.width, config.height, config.hfov_deg)
    return {"intrinsics": {"width": intrinsics.width, "height": intrinsics.height, "fx": intrinsics.fx,
                           "fy": intrinsics.fy, "cx": intrinsics.cx, "cy": intrinsics.cy}}


def _written_scenes(root: str, jobs: list[SceneJob], config: DriveConfig, workers: int) -> Iterator[dict]:
    """Write ``jobs`` (in ``workers`` processes) and yield each scene's metadata as it is finished."""
    tasks = [(root, job, config) for job in jobs]
    if workers == 1:
        yield from map(_write_scene_task, tasks)
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(os.getpid(),))
    try:
        for future in as_completed([pool.submit(_write_scene_task, task) for task in tasks]):
            yield future.result()
    finally:  # a failed scene (or Ctrl-C) stops the run now: the scenes not started are not rendered for nothing
        pool.shutdown(wait=True, cancel_futures=True)
