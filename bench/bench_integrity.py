"""What the integrity checks cost, measured side by side in one run on one thread.

* Opening a bag: ``BagReader.open`` (every MCAP chunk decompressed and CRC-checked, the summary CRC) against
  opening the same bag with rosbags alone, and both against reading every message of the bag once.
* Listing a data set split: ``scan_split`` with the ``meta.json`` checks (listed frames, PNG header sizes)
  against the same listing without them, and against decoding every frame of the split once.

    python bench/bench_integrity.py [--seconds 6] [--size 96] [--scenes 12] [--frames 4]
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from unittest import mock  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from rosbags.rosbag2 import Reader  # noqa: E402

from robustseg_core.data import DeliverDataset, deliver  # noqa: E402
from robustseg_core.sim.generate import main as generate  # noqa: E402
from robustseg_ros.bagtools.bag_io import BagReader  # noqa: E402
from robustseg_ros.bagtools.record_synthetic import main as record  # noqa: E402

REPEATS = 5


def median_seconds(function) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_bag(folder: Path, seconds: float, size: int) -> None:
    bag = folder / "bag"
    record([str(bag), "--duration", str(seconds), "--width", str(size), "--height", str(size)])
    megabytes = sum(path.stat().st_size for path in bag.glob("*.mcap")) / 1e6

    def plain_open():
        reader = Reader(bag)
        reader.open()
        reader.close()

    def checked_open():
        with BagReader(bag):
            pass

    def read_all():
        with BagReader(bag) as reader:
            for _ in reader.messages(raw=True):
                pass

    plain, checked, full = median_seconds(plain_open), median_seconds(checked_open), median_seconds(read_all)
    print(f"bag: {seconds:g} s drive at {size}x{size}, {megabytes:.1f} MB MCAP")
    print(f"  open with rosbags alone            {1e3 * plain:8.1f} ms")
    print(f"  open with the CRC checks           {1e3 * checked:8.1f} ms  ({megabytes / (checked - plain):.0f} MB/s "
          f"checked)")
    print(f"  open + read every message (raw)    {1e3 * full:8.1f} ms  (checks = {100 * (checked - plain) / full:.0f} % "
          "of one full read)")


def bench_dataset(folder: Path, size: int, scenes: int, frames: int) -> None:
    root = folder / "data"
    generate(["--out", str(root), "--size", str(size), "--train-scenes", str(scenes), "--val-scenes", "0",
              "--test-scenes", "0", "--frames-per-scene", str(frames), "--quiet"])
    meta = deliver.read_meta(root)

    def checked():
        deliver.scan_split(root, "train", meta=meta)

    def unchecked():
        with mock.patch.object(deliver, "check_listed"), mock.patch.object(deliver, "check_frame_sizes"):
            deliver.scan_split(root, "train", meta=meta)

    def decode_all():
        dataset = DeliverDataset(root, "train")
        for index in range(len(dataset)):
            dataset.load(index)

    with_checks, without, decode = median_seconds(checked), median_seconds(unchecked), median_seconds(decode_all)
    print(f"data set: {scenes * frames} frames at {size}x{size} (5 PNG files each)")
    print(f"  list the split without the meta.json checks  {1e3 * without:8.1f} ms")
    print(f"  list the split with them                     {1e3 * with_checks:8.1f} ms")
    print(f"  decode every frame once (one epoch's reads)  {1e3 * decode:8.1f} ms  (checks = "
          f"{100 * (with_checks - without) / decode:.1f} % of it)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="bag: seconds of drive")
    parser.add_argument("--size", type=int, default=96, help="image size (px) of the bag and the data set")
    parser.add_argument("--scenes", type=int, default=12, help="data set: scenes")
    parser.add_argument("--frames", type=int, default=4, help="data set: frames per scene")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        bench_bag(Path(folder), args.seconds, args.size)
        bench_dataset(Path(folder), args.size, args.scenes, args.frames)


if __name__ == "__main__":
    main()
