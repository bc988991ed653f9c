"""``generate_dataset``: render a procedural multimodal driving data set in DELIVER's layout.

Example::

    generate_dataset --out data/sim --size 256 --train-scenes 200 --val-scenes 50 --test-scenes 50 \\
        --frames-per-scene 10 --workers 2

Scenes are spread evenly over the conditions (scene i of a split gets condition i mod n);
``--failure-fraction`` of each split's scenes get one of the five sensor-failure cases (cycled).
Scene seeds derive from ``--seed``, the split and the scene number, so the same arguments give
bit-identical files.

``meta.json`` is written last; the same command run again finishes an interrupted run (or, for a
complete data set, writes nothing). A non-empty folder holding anything else is refused unless
``--overwrite``, which clears it first. ``generate_dataset --index ROOT`` writes the ``meta.json`` of a
DELIVER-layout data set from elsewhere, which every loader asks for.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from robustseg_core.cli import console_script, non_negative_int, positive_int
from robustseg_core.dataset_meta import index_dataset
from robustseg_core.sim.drive import DriveConfig
from robustseg_core.sim.randomization import RANDOMIZATIONS
from robustseg_core.sim.scene import SEED_LIMIT, check_seed
from robustseg_core.sim.sensors_sim import CONDITIONS, FAILURES
from robustseg_core.sim.writer import SPLITS, SceneJob, scene_name, write_dataset

DEFAULT_HFOV_DEG = DriveConfig.hfov_deg
#: --frame-rate bounds (Hz): a frame period of 1 ms to 1 s (the events of one period form an event image)
FRAME_RATE_RANGE_HZ = (1.0, 1000.0)


def plan_scenes(seed: int, scenes_per_split: dict[str, int], frames_per_scene: int,
                conditions: tuple[str, ...] = CONDITIONS, failure_fraction: float = 0.25) -> list[SceneJob]:
    """The data set's scenes: names, seeds, conditions and failure cases (deterministic in ``seed``)."""
    check_seed(seed, "data set seed")
    if not conditions:
        raise ValueError("at least one condition is needed")
    if not 0.0 <= failure_fraction <= 1.0:
        raise ValueError(f"failure fraction must be within [0, 1], got {failure_fraction}")
    jobs = []
    number = 0
    for split_index, split in enumerate(SPLITS):
        count = scenes_per_split.get(split, 0)
        if count < 0:
            raise ValueError(f"scene count for {split} must be >= 0, got {count}")
        rng = np.random.default_rng([seed, 7, split_index])
        failing = rng.permutation(count)[: int(round(count * failure_fraction))]
        cases = list(rng.permutation(FAILURES))
        failure_of = {int(scene): str(cases[k % len(cases)]) for k, scene in enumerate(sorted(failing))}
        for i in range(count):
            failure = failure_of.get(i)
            scene_seed = int(np.random.SeedSequence([seed, split_index, i]).generate_state(1)[0])
            jobs.append(SceneJob(split, scene_name(number, failure), scene_seed, conditions[i % len(conditions)],
                                 failure, frames_per_scene))
            number += 1
    return jobs


def _seed(text: str) -> int:
    """argparse type of ``--seed``: a whole number in [0, 2**32)."""
    value = int(text)
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"expected a whole number within 0..{SEED_LIMIT - 1}, got {text} (numpy "
                                         "seeds by 32-bit words: larger seeds would repeat the scenes of smaller ones)")
    return value


def _conditions(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.replace(",", " ").split() if name.strip())
    unknown = [name for name in names if name not in CONDITIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"conditions must be a list from {', '.join(CONDITIONS)}; got {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="generate_dataset",
                                     description="Render a procedural multimodal driving data set in DELIVER's layout.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="output root folder (created; the same command again finishes an interrupted run)")
    target.add_argument("--index", metavar="ROOT",
                        help="write meta.json for the DELIVER-layout data set at ROOT (from elsewhere) and exit")
    parser.add_argument("--overwrite", action="store_true",
                        help="clear the output folder of an earlier data set first (required for a non-empty one)")
    parser.add_argument("--size", type=positive_int, default=256, help="square image size in pixels")
    parser.add_argument("--width", type=positive_int, help="image width (overrides --size)")
    parser.add_argument("--height", type=positive_int, help="image height (overrides --size)")
    parser.add_argument("--hfov", type=float, default=argparse.SUPPRESS,
                        help=f"horizontal field of view in degrees (default {DEFAULT_HFOV_DEG:g}; not with "
                             "--randomization wide, which draws each scene's)")
    parser.add_argument("--seed", type=_seed, default=0, help="data set seed, 0..2**32-1")
    parser.add_argument("--train-scenes", type=non_negative_int, default=40, help="scenes in the train split")
    parser.add_argument("--val-scenes", type=non_negative_int, default=10, help="scenes in the val split")
    parser.add_argument("--test-scenes", type=non_negative_int, default=10, help="scenes in the test split")
    parser.add_argument("--frames-per-scene", type=positive_int, default=10,
                        help="consecutive frames rendered per scene")
    parser.add_argument("--frame-rate", type=float, default=10.0,
                        help="frames per second, 1 to 1000 (events span one frame interval)")
    parser.add_argument("--conditions", type=_conditions, default=CONDITIONS,
                        help="comma- or space-separated subset of " + ", ".join(CONDITIONS))
    parser.add_argument("--failure-fraction", type=float, default=0.25,
                        help="share of each split's scenes with a sensor-failure case")
    parser.add_argument("--randomization", choices=tuple(RANDOMIZATIONS), default="benchmark",
                        help="ranges of the per-scene draws: the benchmark's, or 'wide' (camera intrinsics and pose, "
                             "sun, light, exposure and materials drawn more widely) for encoder pretraining data")
    parser.add_argument("--workers", type=positive_int, default=1, help="processes rendering scenes in parallel")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Generate (or index) a data set; returns its ``meta.json`` record."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.index:
        meta = index_dataset(args.index)
        frames = {split: sum(scene["frames"] for scene in scenes) for split, scenes in meta["splits"].items()}
        print(f"wrote {args.index}/meta.json: {meta['width']}x{meta['height']} px, frames per split {frames}",
              file=sys.stderr)
        return meta
    width = args.width or args.size
    height = args.height or args.size
    if width < 16 or height < 16:
        parser.error(f"images must be at least 16x16, got {width}x{height}")
    if not 0.0 <= args.failure_fraction <= 1.0:
        parser.error(f"--failure-fraction must be within [0, 1], got {args.failure_fraction}")
    low, high = FRAME_RATE_RANGE_HZ
    if not low <= args.frame_rate <= high:  # the event window is one frame period: its events grow with it
        parser.error(f"--frame-rate must be in [{low:g}, {high:g}] Hz, got {args.frame_rate}")
    hfov = getattr(args, "hfov", None)
    if hfov is not None and args.randomization != "benchmark":
        parser.error(f"--hfov {hfov:g} cannot be combined with --randomization {args.randomization}, which draws "
                     "each scene's field of view: leave --hfov out")
    hfov = DEFAULT_HFOV_DEG if hfov is None else hfov
    if not 10.0 <= hfov <= 170.0:
        parser.error(f"--hfov must be within [10, 170] degrees, got {hfov}")
    counts = {"train": args.train_scenes, "val": args.val_scenes, "test": args.test_scenes}
    if sum(counts.values()) == 0:
        parser.error("nothing to do: every split has 0 scenes")
    jobs = plan_scenes(args.seed, counts, args.frames_per_scene, args.conditions, args.failure_fraction)
    config = DriveConfig(width=width, height=height, hfov_deg=hfov, frame_rate=args.frame_rate,
                         randomization=args.randomization)

    def progress(done: int, total: int, frames: int, elapsed: float) -> None:
        if args.quiet:
            return
        rate = frames / max(elapsed, 1e-9)
        remaining = (total - done) * args.frames_per_scene / max(rate, 1e-9)
        print(f"[{done}/{total} scenes] {frames} frames, {rate:.1f} frames/s, {elapsed:.0f} s elapsed, "
              f"~{remaining:.0f} s left", file=sys.stderr, flush=True)

    def note(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    meta = write_dataset(args.out, jobs, config, seed=args.seed, workers=args.workers, progress=progress,
                         overwrite=args.overwrite, note=note)
    if not args.quiet:
        print(f"{args.out}: {len(jobs)} scenes x {args.frames_per_scene} frames", file=sys.stderr)
    return meta


cli = console_script(main, "generate_dataset")


if __name__ == "__main__":
    sys.exit(cli())
