"""``make demo``: the whole robot-side job on a CPU, in a few minutes.

1. ``record_synthetic``: a generated 10 s drive with the default scripted fault timeline (nine faults:
   over- and under-exposure, night, a LiDAR unplugged for 2 s and later jittered, an event flood and an
   event starvation, a frozen depth camera, a depth noise burst) as an MCAP rosbag2;
2. ``evaluate_bag --mode live --spawn-node``: starts the perception node with the shipped student,
   replays the bag into it over DDS with ``/clock``, records what it publishes, scores it against the
   bag's ground truth and writes ``report.md`` with plots;
3. prints the report's summary.

DDS stays on this machine (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` unless already set).

    python -m robustseg_ros.demo --out runs/demo
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

DEFAULT_PARAMS = Path(__file__).resolve().parent.parent / "config" / "perception.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of drive")
    parser.add_argument("--size", type=int, default=128, help="camera width and height (px)")
    parser.add_argument("--params-file", type=Path, default=DEFAULT_PARAMS)
    parser.add_argument("--checkpoint", default="", help="default: the student shipped in the package")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

    from .bagtools.evaluate_bag import cli as evaluate_bag  # console scripts: one error line, an exit status
    from .bagtools.record_synthetic import cli as record_synthetic

    bag, report = args.out / "drive_bag", args.out / "live_evaluation"
    if bag.exists():
        shutil.rmtree(bag)
    print(f"[demo] recording a {args.duration:g} s drive with faults into {bag}", flush=True)
    status = record_synthetic([str(bag), "--seed", str(args.seed), "--duration", str(args.duration),
                               "--width", str(args.size), "--height", str(args.size)])
    if status:
        return status
    print("[demo] replaying it into the perception node (shipped student unless --checkpoint) and evaluating", flush=True)
    status = evaluate_bag([str(bag), "--mode", "live", "--spawn-node", "--params-file", str(args.params_file),
                           "--checkpoint", args.checkpoint, "--device", args.device, "--torch-threads", "1",
                           "--output", str(report)])
    if status:
        return status
    summary = (report / "report.md").read_text().split("### ")[0]
    print(summary)
    print(f"[demo] full report with plots: {report / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
