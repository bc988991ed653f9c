"""Procedural scene generator: determinism, coverage, modality sanity, complementarity and the writer."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from robustseg_core import __version__
from robustseg_core.atomic import KILL_HOOK_ENVIRONMENT
from robustseg_core.classes import CLASS_ID, NUM_CLASSES
from robustseg_core.data import DatasetError, DeliverDataset
from robustseg_core.dataset_meta import PARTIAL_FOLDER, read_meta
from robustseg_core.sensors import decode_depth_png, depth_to_hha, project_points
from robustseg_core.sim import Drive, DriveConfig, dataset_folder, encode_frame, writer
from robustseg_core.sim.analysis import (
    class_contrast,
    class_separation,
    event_rates,
    render_samples,
    separability,
)
from robustseg_core.sim.generate import main as generate_main
from robustseg_core.sim.generate import plan_scenes
from robustseg_core.sim.scene import Scene
from robustseg_core.sim.writer import MODALITY_FILES, read_png

SMALL = DriveConfig(width=64, height=64)


def frame_arrays(frame) -> dict[str, np.ndarray]:
    return {"rgb": frame.rgb, "depth": frame.depth, "labels": frame.labels, "lidar": frame.lidar_points,
            "events": frame.events, "moving": frame.moving}


def assert_same_frame(a, b) -> None:
    for name, value in frame_arrays(a).items():
        other = frame_arrays(b)[name]
        assert value.dtype == other.dtype and value.shape == other.shape, name
        assert value.tobytes() == other.tobytes(), f"{name} differs"


# ----------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_frames_in_any_order():
    reference = Drive(5, SMALL).frame(3)
    assert_same_frame(reference, Drive(5, SMALL).frame(3))
    drive = Drive(5, SMALL)
    drive.frame(6)
    drive.frame(2)
    assert_same_frame(reference, drive.frame(3))          # after other frames (caches warm)
    assert_same_frame(reference, Drive(5, SMALL).frame_at(0.3, 3))


def test_different_seeds_differ():
    a, b = Drive(5, SMALL).frame(1), Drive(6, SMALL).frame(1)
    assert not np.array_equal(a.rgb, b.rgb)
    assert not np.array_equal(a.labels, b.labels)
    assert len(a.lidar_points) != len(b.lidar_points) or not np.array_equal(a.lidar_points, b.lidar_points)


# ----------------------------------------------------------------------------- content


def test_class_coverage_over_a_few_frames():
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for seed in range(6):
        counts += np.bincount(Drive(seed, DriveConfig(width=96, height=96)).frame(2).labels.ravel(),
                              minlength=NUM_CLASSES)
    present = {name for name, i in CLASS_ID.items() if counts[i] > 0}
    assert len(present) >= 15, sorted(present)
    required = {"Road", "RoadLine", "SideWalk", "Building", "Vegetation", "Cars", "Pedestrian", "Pole", "Sky"}
    assert required <= present, required - present


def test_frame_fields_and_sky_has_zero_depth():
    frame = Drive(2, DriveConfig(width=80, height=64)).frame(1)
    assert frame.rgb.shape == (64, 80, 3) and frame.rgb.dtype == np.uint8
    assert frame.depth.dtype == np.float32 and frame.labels.dtype == np.uint8
    assert frame.lidar_points.dtype == np.float32 and frame.lidar_points.shape[1] == 4
    assert frame.labels.max() < NUM_CLASSES
    sky = frame.labels == CLASS_ID["Sky"]
    assert sky.any() and np.array_equal(sky, frame.depth == 0)
    assert np.all(frame.depth[~sky] > 0)
    assert np.all(np.diff(frame.events["t"]) >= 0)
    t0, t1 = frame.event_window
    assert t1 == pytest.approx(0.1) and t0 == pytest.approx(0.0)
    assert np.all((frame.events["t"] >= t0) & (frame.events["t"] <= t1))


def test_lidar_is_sparse_non_empty_and_aligned_with_depth():
    frame = Drive(4, DriveConfig(width=128, height=128)).frame(1)
    image = encode_frame(frame)["lidar"]
    coverage = image.any(axis=2).mean()
    assert 0.01 < coverage < 0.35
    u, v, z = project_points(frame.lidar_points, frame.intrinsics, frame.T_cam_lidar)
    inside = (z > 0.5) & (u > -0.5) & (u < 127.5) & (v > -0.5) & (v < 127.5)
    col, row = np.floor(u[inside] + 0.5).astype(int), np.floor(v[inside] + 0.5).astype(int)
    relative = np.abs(frame.depth[row, col] - z[inside]) / z[inside]
    assert np.median(relative) < 0.03


def test_moving_actors_fire_more_events_than_the_static_world():
    samples = render_samples(range(8), DriveConfig(width=96, height=96), frames=(2,))
    moving, static = event_rates(samples)
    assert moving > 1.5 * static


@pytest.mark.parametrize("seed", [1, 8, 11])
def test_night_and_fog_ruin_rgb_but_not_lidar_or_depth(seed):
    frames = {c: Drive(seed, DriveConfig(width=96, height=96, condition=c)).frame(2)
              for c in ("cloud", "sun", "night", "fog")}
    day, night, fog = frames["cloud"], frames["night"], frames["fog"]
    assert class_contrast(fog.rgb, fog.labels) < 0.85 * class_contrast(day.rgb, day.labels)
    assert class_separation(night.rgb, night.labels) < 0.7 * class_separation(day.rgb, day.labels)
    for condition in ("sun", "night", "fog"):
        other = frames[condition]
        np.testing.assert_array_equal(other.lidar_points, day.lidar_points)
        np.testing.assert_array_equal(other.depth, day.depth)
        np.testing.assert_array_equal(other.labels, day.labels)


def test_failure_cases():
    config = DriveConfig(width=64, height=64, condition="cloud")
    nominal = Drive(12, config).frame(2)
    low = Drive(12, DriveConfig(width=64, height=64, condition="cloud", failure="eventlowres")).frame(2)
    assert low.event_size == (32, 32)
    assert low.events["x"].max() < 32 and low.events["y"].max() < 32
    assert encode_frame(low)["event"].shape == (32, 32, 3)
    jitter = Drive(12, DriveConfig(width=64, height=64, condition="cloud", failure="lidarjitter")).frame(2)
    assert jitter.lidar_points.shape == nominal.lidar_points.shape
    assert np.abs(jitter.lidar_points[:, :3] - nominal.lidar_points[:, :3]).mean() > 0.03
    over = Drive(12, DriveConfig(width=64, height=64, condition="cloud", failure="overexposure")).frame(2)
    under = Drive(12, DriveConfig(width=64, height=64, condition="cloud", failure="underexposure")).frame(2)
    assert over.rgb.mean() > nominal.rgb.mean() + 30 and under.rgb.mean() < nominal.rgb.mean() - 30
    np.testing.assert_array_equal(over.depth, nominal.depth)
    blur_config = DriveConfig(width=64, height=64, condition="cloud", failure="motionblur")
    drive = Drive(3, blur_config)
    assert drive.ego_speed > 1.0
    blurred, sharp = drive.frame(2), Drive(3, config).frame(2)
    detail = [np.abs(np.diff(f.rgb.astype(float), axis=0)).mean() for f in (blurred, sharp)]
    assert detail[0] < 0.9 * detail[1]
    with pytest.raises(ValueError, match="failure"):
        DriveConfig(failure="lensflare")
    with pytest.raises(ValueError, match="condition"):
        DriveConfig(condition="snow")


# ----------------------------------------------------------------------------- complementarity


@pytest.fixture(scope="module")
def sun_samples():
    return render_samples(range(24), DriveConfig(width=96, height=96), frames=(2, 6))


def test_road_lines_are_told_apart_by_colour_only(sun_samples):
    rgb, _ = separability(sun_samples, "Road", "RoadLine", "rgb")
    depth, _ = separability(sun_samples, "Road", "RoadLine", "depth")
    lidar, _ = separability(sun_samples, "Road", "RoadLine", "lidar")
    assert rgb > 0.8 and depth < 0.65 and lidar < 0.65, (rgb, depth, lidar)


def test_curbs_of_road_coloured_sidewalks_are_told_apart_by_geometry(sun_samples):
    same_color = [s for s in sun_samples if s.scene_flags["sidewalk_like_road"]]
    depth, scenes = separability(same_color, "Road", "SideWalk", "depth")
    rgb, _ = separability(same_color, "Road", "SideWalk", "rgb")
    assert scenes >= 2
    assert depth > 0.85 and depth > rgb + 0.1, (depth, rgb)


# ----------------------------------------------------------------------------- writer and CLI


def test_writer_produces_deliver_layout_and_round_trips(tmp_path):
    root = str(tmp_path / "sim")
    argv = ["--out", root, "--size", "64", "--train-scenes", "1", "--val-scenes", "1", "--test-scenes", "0",
            "--frames-per-scene", "2", "--seed", "3", "--failure-fraction", "1.0", "--conditions", "rain,night",
            "--quiet"]
    assert generate_main(argv)["width"] == 64
    jobs = plan_scenes(3, {"train": 1, "val": 1}, 2, ("rain", "night"), 1.0)
    assert [job.name for job in jobs] == [f"SIM_0000_{jobs[0].failure}", f"SIM_0001_{jobs[1].failure}"]
    expected = set()
    for job in jobs:
        for folder, (suffix, _) in MODALITY_FILES.items():
            for frame in range(2):
                expected.add(os.path.join(folder, job.condition, job.split, job.name, f"{frame:06d}{suffix}"))
    written = {os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files}
    assert written == expected | {"meta.json"}

    job = jobs[0]
    frame = Drive(job.seed, DriveConfig(width=64, height=64, condition=job.condition, failure=job.failure)).frame(1)

    def path(folder):
        return os.path.join(root, folder, job.condition, job.split, job.name, "000001" + MODALITY_FILES[folder][0])

    np.testing.assert_array_equal(read_png(path("img")), frame.rgb)
    semantic = read_png(path("semantic"))
    assert semantic.shape == (64, 64, 4)
    np.testing.assert_array_equal(semantic[..., 0], frame.labels + 1)
    assert not semantic[..., 1:3].any() and np.all(semantic[..., 3] == 255)
    np.testing.assert_allclose(decode_depth_png(read_png(path("depth"))), frame.depth, atol=1e-3)
    np.testing.assert_array_equal(read_png(path("hha")), depth_to_hha(frame.depth, frame.intrinsics,
                                                                      frame.R_world_cam, frame.camera_height_m))
    encoded = encode_frame(frame)
    np.testing.assert_array_equal(read_png(path("lidar")), encoded["lidar"])
    np.testing.assert_array_equal(read_png(path("event")), encoded["event"])

    with open(os.path.join(root, "meta.json")) as handle:
        meta = json.load(handle)
    assert meta["seed"] == 3 and meta["width"] == 64 and meta["intrinsics"]["fx"] == pytest.approx(32.0)
    assert [s["scene"] for s in meta["splits"]["train"]] == [jobs[0].name]
    assert meta["splits"]["val"][0]["case"] == jobs[1].failure and meta["splits"]["test"] == []

    def file_bytes(folder):
        with open(path(folder), "rb") as handle:
            return handle.read()

    before = {folder: file_bytes(folder) for folder in MODALITY_FILES}
    for folder in ("img", "event"):
        os.unlink(path(folder))
    assert generate_main([*argv, "--overwrite"]) == meta    # cleared and written again: the same bytes
    assert {folder: file_bytes(folder) for folder in MODALITY_FILES} == before
    assert not [f for _, _, files in os.walk(root) for f in files if f.endswith(".tmp") or f == ".lock"]


def test_a_killed_generation_is_refused_by_loaders_and_finished_by_the_same_command(tmp_path, commands):
    def arguments(root):
        return ["--out", root, "--size", "32", "--seed", "2", "--train-scenes", "3", "--val-scenes", "1",
                "--test-scenes", "0", "--frames-per-scene", "1", "--quiet"]

    root = tmp_path / "killed"
    killed = commands.run("robustseg_core.sim.generate", arguments(root),
                          env={KILL_HOOK_ENVIRONMENT: "000000_semantic_front.png:3"})  # the third scene's last file
    assert killed.status == -signal.SIGKILL and not (root / "meta.json").exists()
    records = sorted(path.name for path in (root / PARTIAL_FOLDER).iterdir())
    assert len(records) == 3 and records[0].startswith("SIM_0000") and records[1].startswith("SIM_0001")
    with pytest.raises(DatasetError, match="an unfinished generate_dataset run"):
        DeliverDataset(root, "train")
    finished = commands.run("robustseg_core.sim.generate", arguments(root))
    assert finished.status == 0 and f"resuming {root}: 2 of 4 scenes were already written" in finished.stderr
    assert commands.run("robustseg_core.sim.generate", arguments(tmp_path / "straight")).status == 0

    def files(folder):
        return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}

    assert files(root) == files(tmp_path / "straight")  # no temporary file, lock or bookkeeping left, same bytes
    assert len(DeliverDataset(root, "train")) == 3


def test_sigterm_ends_the_console_script_like_ctrl_c(tmp_path):
    """``docker stop`` or systemd: SIGTERM to the installed ``generate_dataset`` ends it with one line and exit 130,
    saying how to finish the data set, as Ctrl-C does."""
    import subprocess
    import sys
    import time

    script = Path(sys.executable).with_name("generate_dataset")
    if not script.exists():
        pytest.skip(f"{script}: the console script is not installed next to this interpreter")
    root = tmp_path / "terminated"
    process = subprocess.Popen([str(script), "--out", str(root), "--size", "32", "--seed", "3", "--train-scenes", "400",
                                "--val-scenes", "0", "--test-scenes", "0", "--frames-per-scene", "1", "--quiet"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (root / PARTIAL_FOLDER).is_dir() or not any((root / PARTIAL_FOLDER).glob("SIM_*")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.terminate()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert stderr.splitlines()[-1].startswith(f"generate_dataset: interrupted: {root} is unfinished")


def test_plan_spreads_conditions_and_failures():
    jobs = plan_scenes(0, {"train": 20, "val": 5, "test": 5}, 3)
    train = [j for j in jobs if j.split == "train"]
    assert [j.condition for j in train[:5]] == ["cloud", "fog", "night", "rain", "sun"]
    assert sum(j.failure is not None for j in train) == 5
    assert len({j.failure for j in train if j.failure}) == 5
    assert len({j.seed for j in jobs}) == len(jobs)
    assert all(j.failure in j.name for j in jobs if j.failure)


@pytest.mark.parametrize("bad", [["--size", "0"], ["--conditions", "snow"], ["--failure-fraction", "2"],
                                 ["--workers", "0"],
                                 ["--train-scenes", "0", "--val-scenes", "0", "--test-scenes", "0"]])
def test_cli_rejects_bad_arguments(tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as error:
        generate_main(["--out", str(tmp_path / "x")] + bad)
    assert error.value.code == 2
    assert "error" in capsys.readouterr().err


def tiny_arguments(root, *extra):
    return ["--out", str(root), "--size", "16", "--seed", "4", "--train-scenes", "1", "--val-scenes", "1",
            "--test-scenes", "0", "--frames-per-scene", "1", "--quiet", *extra]


def folder_files(folder):
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


class Killed(BaseException):
    """Stands in for SIGKILL at a chosen point (nothing after it runs)."""


def test_a_generation_killed_while_starting_or_publishing_is_finished_by_the_same_command(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    meta = generate_main(tiny_arguments(straight))
    expected = folder_files(straight)

    # killed between creating .partial/ and writing its plan (a writer's temporary file left behind)
    started = tmp_path / "started"
    (started / PARTIAL_FOLDER).mkdir(parents=True)
    (started / PARTIAL_FOLDER / ".plan.json.abcd1234.tmp").write_text("{")
    assert generate_main(tiny_arguments(started)) == meta and folder_files(started) == expected

    # killed while the bookkeeping is removed, after meta.json: the data set is complete for loaders already
    publishing = tmp_path / "publishing"
    real_rmtree = dataset_folder.shutil.rmtree

    def killed_rmtree(path, *args, **kwargs):
        (Path(path) / "plan.json").unlink()  # half-removed
        raise Killed

    monkeypatch.setattr(dataset_folder.shutil, "rmtree", killed_rmtree)
    with pytest.raises(Killed):
        generate_main(tiny_arguments(publishing))
    monkeypatch.setattr(dataset_folder.shutil, "rmtree", real_rmtree)
    assert not (publishing / PARTIAL_FOLDER).exists() and read_meta(publishing) == meta
    assert generate_main(tiny_arguments(publishing)) == meta and folder_files(publishing) == expected

    # as an earlier version left it: meta.json next to a .partial/ that lost its plan
    earlier = tmp_path / "earlier"
    shutil.copytree(straight, earlier)
    (earlier / PARTIAL_FOLDER).mkdir()
    (earlier / PARTIAL_FOLDER / f"{meta['splits']['train'][0]['scene']}.json").write_text("{}\n")
    with pytest.raises(DatasetError, match=r"unfinished generate_dataset run \(killed while finishing"):
        read_meta(earlier)
    assert generate_main(tiny_arguments(earlier)) == meta and folder_files(earlier) == expected


def test_an_unfinished_run_of_another_version_is_refused_naming_both(tmp_path, monkeypatch):
    root = tmp_path / "upgraded"
    monkeypatch.setattr(writer, "__version__", "0.0.1")
    def killed_before_publishing(self, meta):
        raise Killed

    monkeypatch.setattr(dataset_folder.DatasetFolder, "publish", killed_before_publishing)
    with pytest.raises(Killed):
        generate_main(tiny_arguments(root))
    monkeypatch.undo()
    with pytest.raises(dataset_folder.DatasetFolderError,
                       match=rf"unfinished run with other arguments \(robustseg_core version 0.0.1 -> {__version__}\)"):
        generate_main(tiny_arguments(root))
    assert generate_main(tiny_arguments(root, "--overwrite"))["version"] == __version__


@pytest.mark.parametrize("seed", ["4294967296", "-1"])
def test_seeds_beyond_32_bits_or_negative_are_refused_naming_them(tmp_path, seed, capsys):
    with pytest.raises(SystemExit) as error:
        generate_main(["--out", str(tmp_path / "x"), "--seed", seed])
    assert error.value.code == 2
    message = capsys.readouterr().err
    assert f"argument --seed: expected a whole number within 0..4294967295, got {seed}" in message
    for bad in (int(seed), 2**40):
        with pytest.raises(ValueError, match=rf"drive seed {bad}: expected a whole number within 0..4294967295"):
            Drive(bad, SMALL)
        with pytest.raises(ValueError, match=rf"scene seed {bad}: expected"):
            Scene(bad)
        with pytest.raises(ValueError, match=rf"data set seed {bad}: expected"):
            plan_scenes(bad, {"train": 1}, 1)


def test_wide_randomisation_draws_the_fov_so_an_explicit_one_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as error:
        generate_main(tiny_arguments(tmp_path / "x", "--randomization", "wide", "--hfov", "70"))
    assert error.value.code == 2
    assert "--hfov 70 cannot be combined with --randomization wide" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="hfov_deg 70.0 with randomization 'wide'"):
        DriveConfig(randomization="wide", hfov_deg=70.0)
    meta = generate_main(tiny_arguments(tmp_path / "wide", "--randomization", "wide"))
    assert "intrinsics" not in meta and "intrinsics" not in json.loads((tmp_path / "wide" / "meta.json").read_text())
    scenes = meta["splits"]["train"] + meta["splits"]["val"]
    assert len({scene["hfov_deg"] for scene in scenes}) == 2, "each scene's own field of view"
    benchmark = generate_main(tiny_arguments(tmp_path / "benchmark", "--hfov", "70"))
    assert benchmark["intrinsics"]["fx"] == pytest.approx(8 / math.tan(math.radians(35)))


def test_scene_writers_end_with_a_generate_dataset_killed_with_sigkill(tmp_path):
    """Workers outlived a killed parent and went on writing into a folder no longer locked."""
    import subprocess
    import sys
    import time

    def children(pid: int) -> list[int]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
        return found

    def command_line(pid: int) -> bytes:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return b""

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    command = [sys.executable, "-m", "robustseg_core.sim.generate",
               *tiny_arguments(tmp_path / "data", "--workers", "2"), "--train-scenes", "6", "--frames-per-scene", "8",
               "--size", "64"]
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
        workers = [pid for pid in children(parent.pid) if b"multiprocessing" in command_line(pid)]
        time.sleep(0.05)
    assert len(workers) >= 2, "the two scene writers started"
    time.sleep(1.0)  # past their initialiser
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers), "no scene writer outlives generate_dataset"
