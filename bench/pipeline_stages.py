"""PerceptionPipeline.process stage times in-process (no DDS), for comparing two checkouts side by side.

The shipped student's architecture (``mit_cpu``, 256 head) with random weights, one torch thread, a
generated drive at ``--width`` x ``--height`` with relaxed sensor ages so that every frame fuses all
four sensors; ``--frames`` frames, the first two dropped; medians in ms of each stage the pipeline
times, the sum of all but the forward ("overhead") and (overhead + forward) / forward. ``--root`` is
the checkout whose code runs (its ``test/test_pipeline.py`` builds the messages), so the code before a
change can run on the same machine minutes apart:

    git archive main | tar -x -C /tmp/main_tree
    for root in /tmp/main_tree . /tmp/main_tree .; do .venv/bin/python bench/pipeline_stages.py --root $root; done
"""

from __future__ import annotations

import argparse
import inspect
import sys
import tempfile
from pathlib import Path

STAGES = ("convert", "quality", "encode", "preprocess", "infer", "postprocess")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1]), help="checkout to run")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--frames", type=int, default=10)
    args = parser.parse_args()
    root = str(Path(args.root).resolve())
    sys.path[:0] = [root, f"{root}/test"]

    import numpy as np
    import torch
    from test_pipeline import drive_messages, feed

    from robustseg_core.inference import Segmenter
    from robustseg_core.models import build_segmentor
    from robustseg_core.models.checkpoint import checkpoint_meta, save_checkpoint
    from robustseg_core.sim.drive import Drive, DriveConfig
    from robustseg_ros.bagtools.record_synthetic import rig_parameters
    from robustseg_ros.params import PerceptionParams
    from robustseg_ros.pipeline import PerceptionPipeline

    try:  # what the node does at start-up, where the checkout has it
        from robustseg_ros.node import keep_freed_memory
        keep_freed_memory()
    except ImportError:
        pass
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_segmentor("mit_cpu", embed_dim=256)
    checkpoint = Path(tempfile.mkdtemp(prefix="stages_")) / "model.pt"
    save_checkpoint(checkpoint, {"model": model.state_dict(), "architecture": model.architecture,
                                 "meta": checkpoint_meta({"data": {"eval_size": min(args.width, args.height)}})})
    drive = Drive(3, DriveConfig(width=args.width, height=args.height))
    frames = [drive.frame(index) for index in range(1, 4)]
    relaxed = {f"{sensor}.{name}": value for sensor in ("camera", "depth", "events", "lidar")
               for name, value in (("max_age_s", 5.0), ("dead_after_s", 10.0))}
    pipeline = PerceptionPipeline(PerceptionParams({**rig_parameters(drive), **relaxed}),
                                  Segmenter(checkpoint, device="cpu"))
    options = {"with_color": False}
    if "with_confidence" in inspect.signature(pipeline.process).parameters:
        options["with_confidence"] = False  # what the node asks for without a ~/confidence subscriber
    timings = []
    for index in range(args.frames):
        stamp = 10.0 + index * 0.1
        job = feed(pipeline, drive_messages(frames[index % 3], stamp), stamp + 0.01) or pipeline.on_timer(stamp + 0.07)
        timings.append(pipeline.process(job, **options).timings_ms)
    medians = {stage: float(np.median([timing[stage] for timing in timings[2:]])) for stage in STAGES
               if stage in timings[0]}
    overhead = sum(value for stage, value in medians.items() if stage != "infer")
    print(f"{root} {args.width}x{args.height}: " + " ".join(f"{stage} {value:.1f}" for stage, value in medians.items())
          + f" | overhead {overhead:.1f} ms, (overhead + infer) / infer {(overhead + medians['infer']) / medians['infer']:.3f}")


if __name__ == "__main__":
    main()
