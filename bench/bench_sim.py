"""Benchmark of the procedural scene generator on one thread.

Prints frames/s of rendering every modality (RGB, depth, labels, LiDAR scan, events) at 256x256,
a per-stage breakdown, the cost of the sensor encoders, and the DELIVER writer's throughput.

    python bench/bench_sim.py [--size 256] [--frames 20] [--scenes 5] [--conditions sun,night]
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402

import cv2  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from robustseg_core.sensors import depth_to_hha, encode_depth_png, events_to_frame, lidar_to_image  # noqa: E402
from robustseg_core.sim.drive import Drive, DriveConfig  # noqa: E402
from robustseg_core.sim.generate import plan_scenes  # noqa: E402
from robustseg_core.sim.sensors_sim import CONDITIONS  # noqa: E402
from robustseg_core.sim.writer import write_dataset  # noqa: E402

cv2.setNumThreads(1)


def bench_render(size: int, frames: int, scenes: int, conditions: tuple[str, ...]) -> None:
    stages: dict[str, float] = defaultdict(float)
    total_frames = 0
    total_time = 0.0
    lidar_coverage = 0.0
    for scene in range(scenes):
        condition = conditions[scene % len(conditions)]
        drive = Drive(1000 + scene, DriveConfig(width=size, height=size, condition=condition))
        drive.frame(0)  # warm-up: builds chunks and renders the first "previous" image
        for index in range(1, frames + 1):
            start = time.perf_counter()
            frame = drive.frame(index)
            rendered = time.perf_counter()
            encoders = {
                "enc_hha": lambda: depth_to_hha(frame.depth, frame.intrinsics, frame.R_world_cam,
                                                frame.camera_height_m),
                "enc_depth_png": lambda: encode_depth_png(frame.depth),
                "enc_lidar": lambda: lidar_to_image(frame.lidar_points, frame.intrinsics, frame.T_cam_lidar),
                "enc_event": lambda: events_to_frame(frame.events, *frame.event_size, *frame.event_window),
            }
            for name, encode in encoders.items():
                tick = time.perf_counter()
                image = encode()
                stages[name] += time.perf_counter() - tick
                if name == "enc_lidar":
                    lidar_coverage += float(image.any(axis=2).mean())
            total_time += rendered - start
            for name, seconds in drive.timings.items():
                stages[name] += seconds
            total_frames += 1
    encode_time = sum(v for k, v in stages.items() if k.startswith("enc_"))
    print(f"render, {size}x{size}, one thread, {scenes} scenes x {frames} frames ({', '.join(conditions)})")
    print(f"  all modalities (RGB, depth, labels, LiDAR scan, events): "
          f"{total_frames / total_time:.1f} frames/s ({1000 * total_time / total_frames:.1f} ms/frame)")
    print(f"  including the four encoders: {total_frames / (total_time + encode_time):.1f} frames/s "
          f"({1000 * (total_time + encode_time) / total_frames:.1f} ms/frame)")
    labels = {"world": "scene assembly (chunks, actors at t)", "camera": "camera ray casting + shading + weather",
              "camera_previous": "previous camera image (first frame only)", "events": "event simulation",
              "exposure": "RGB exposure / noise / blur", "lidar": "LiDAR scan", "enc_hha": "encoder: HHA",
              "enc_depth_png": "encoder: depth PNG", "enc_lidar": "encoder: LiDAR image",
              "enc_event": "encoder: event image"}
    for name, seconds in sorted(stages.items(), key=lambda item: -item[1]):
        print(f"    {labels.get(name, name):45s} {1000 * seconds / total_frames:7.2f} ms/frame")
    print(f"  LiDAR image: returns on {100 * lidar_coverage / total_frames:.1f}% of the pixels")


def bench_writer(size: int, frames: int, scenes: int) -> None:
    with tempfile.TemporaryDirectory() as root:
        jobs = plan_scenes(7, {"train": scenes}, frames, CONDITIONS, 0.25)
        start = time.perf_counter()
        write_dataset(root, jobs, DriveConfig(width=size, height=size), seed=7, workers=1)
        elapsed = time.perf_counter() - start
        files = sum(len(names) for _, _, names in os.walk(root))
    count = scenes * frames
    print(f"writer, {size}x{size}, one process: {count} frames ({files} files) in {elapsed:.1f} s = "
          f"{count / elapsed:.1f} frames/s end to end (render + encode + 6 PNGs per frame)")


def report_complementarity(size: int, scenes: int) -> None:
    """Class coverage, per-modality separability of hard class pairs, event rates, probe mIoU per subset."""
    import itertools

    import numpy as np

    from robustseg_core.classes import CLASS_NAMES, NUM_CLASSES
    from robustseg_core.sim.analysis import event_rates, probe_miou, render_samples, separability

    samples, held_out = [], []
    for number, condition in enumerate(CONDITIONS):
        config = DriveConfig(width=size, height=size, condition=condition)
        seeds = range(2000 + 100 * number, 2000 + 100 * number + scenes)
        samples += render_samples(seeds, config, frames=(2, 6))
        held_out += render_samples(range(2050 + 100 * number, 2050 + 100 * number + max(2, scenes // 2)), config,
                                   frames=(2,))
    counts = np.zeros(NUM_CLASSES)
    for sample in samples:
        counts += np.bincount(sample.frame.labels.ravel(), minlength=NUM_CLASSES)
    share = counts / counts.sum()
    print(f"class pixel share over {len(samples)} frames ({size}x{size}, all conditions), "
          f"{int((counts > 0).sum())} of {NUM_CLASSES} classes present:")
    print("  " + ", ".join(f"{CLASS_NAMES[i]} {100 * share[i]:.2f}%" for i in np.argsort(-share)))
    sunny = [s for s in samples if s.frame.condition in ("sun", "cloud")]
    print("within-scene separability (balanced accuracy of a linear discriminant, 0.5 = chance), sun + cloud:")
    cases = [("all scenes", None, "Road", "RoadLine"), ("road-coloured raised sidewalks", "sidewalk_like_road",
                                                          "Road", "SideWalk"),
             ("flush sidewalks", "flush", "Road", "SideWalk"), ("poles coloured like walls", "poles_like_walls",
                                                                  "Pole", "Wall"),
             ("fences coloured like walls", "fence_like_wall", "Fence", "Wall"), ("all scenes", None, "Terrain",
                                                                                  "Ground")]
    for name, flag, class_a, class_b in cases:
        chosen = [s for s in sunny if flag is None or (s.scene_flags["curb_height"] == 0 if flag == "flush"
                                                       else s.scene_flags[flag])]
        scores = [separability(chosen, class_a, class_b, m) for m in ("rgb", "depth", "event", "lidar")]
        print(f"  {class_a:>8s} vs {class_b:<9s} {name:32s} " + "  ".join(
            f"{letter}={score:.2f}" for letter, (score, _) in zip("RDEL", scores)) + f"  ({scores[0][1]} scenes)")
    moving, static = event_rates(samples)
    print(f"events per pixel: moving actors {moving:.2f}, static world {static:.2f} (ratio {moving / static:.1f})")
    names = dict(zip("RDEL", ("rgb", "depth", "event", "lidar")))
    print("linear-probe mIoU (softmax regression on multi-scale pixel features; a weak proxy):")
    for size_k in range(1, 5):
        for combo in itertools.combinations("RDEL", size_k):
            miou, _ = probe_miou(samples, held_out, tuple(names[c] for c in combo), steps=200,
                                 pixels_per_sample=600)
            print(f"  {''.join(combo):5s} {100 * miou:5.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=20, help="frames per scene")
    parser.add_argument("--scenes", type=int, default=5)
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--skip-writer", action="store_true")
    parser.add_argument("--complementarity", type=int, default=0, metavar="SCENES",
                        help="also report coverage / separability / probe mIoU over SCENES drives per condition "
                             "(at 128x128; a few minutes for 10)")
    args = parser.parse_args()
    conditions = tuple(c for c in args.conditions.split(",") if c)
    bench_render(args.size, args.frames, args.scenes, conditions)
    if not args.skip_writer:
        bench_writer(args.size, max(2, args.frames // 2), args.scenes)
    if args.complementarity:
        report_complementarity(128, args.complementarity)


if __name__ == "__main__":
    main()
