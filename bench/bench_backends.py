"""Inference backends side by side: torch eager against each installed backend, in the node, end to end.

One run, each backend in its own process (their thread pools never share one), rounds interleaved so that
the machine's drift hits all backends alike. Two sizes: a 256 x 256 camera at network input 256 x 256,
and a 640 x 480 camera at the node's working size for it (the checkpoint's eval size on the short side,
both sides rounded up to multiples of 32: 128 x 192 for the shipped student). Per backend and size:

* end to end: perception_node over real DDS (bench_node's latency rig: newest input stamp -> outputs
  published, one frame set at a time so nothing queues), median over the frames after the first;
* forward: the backend's network forward alone on the same frame's input, timed right after each frame.

The ONNX backends run the checkpoint's ``export_onnx`` file (exported and checked once, at the start).
``openvino`` is OpenVINO's default precision (bf16 on CPUs that have it, the node's ``fp16: true``);
``openvino:f32`` forces f32 (``fp16: false``). tensorrt joins on a CUDA machine with onnxruntime's
TensorRT execution provider.

    .venv/bin/python bench/bench_backends.py                     # the shipped student, 2 threads
    .venv/bin/python bench/bench_backends.py --frames 20 --rounds 2

Target: the best CPU backend at least 1.5 x torch eager end to end in the node.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

#: Backend variants: name -> (backend parameter, fp16 parameter).
VARIANTS = {"torch": ("torch", True), "onnxruntime": ("onnxruntime", True), "openvino": ("openvino", True),
            "openvino:f32": ("openvino", False), "tensorrt": ("tensorrt", True)}
#: (label, camera width, camera height, network short side; 0: the checkpoint's eval size).
SIZES = (("256 x 256", 256, 256, 256), ("640 x 480 camera", 640, 480, 0))
TARGET = 1.5


def installed_variants() -> list[str]:
    """torch, and each backend whose package is importable (tensorrt only with CUDA and its provider)."""
    variants = ["torch"]
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        variants.append("onnxruntime")
        import onnxruntime
        import torch

        if torch.cuda.is_available() and "TensorrtExecutionProvider" in onnxruntime.get_available_providers():
            variants.append("tensorrt")
    if importlib.util.find_spec("openvino") and importlib.util.find_spec("onnx"):
        variants += ["openvino", "openvino:f32"]
    return variants


def worker(args) -> None:
    """Measure one variant at one size; print one JSON line."""
    import torch
    from bench_node import drive_rig, measure_latency, ros_context

    torch.set_num_threads(args.threads)
    backend, fp16 = VARIANTS[args.variant]
    frames, messages, rig = drive_rig(args.width, args.height)
    base = {**rig, "checkpoint": args.checkpoint, "device": "cuda" if backend == "tensorrt" else "cpu",
            "backend": backend, "fp16": fp16, "short_side": args.short_side}
    if backend != "torch":
        base["onnx_file"] = args.onnx_file
    context = ros_context()
    try:
        records, forward, model = measure_latency(context, base, messages, frames, args.frames)
    finally:
        context.try_shutdown()
    records, forward = records[1:], forward[1:]
    print(json.dumps({"precision": model.get("precision"), "short_side": model.get("short_side_px"),
                      "end_to_end_ms": statistics.median(record["latency"] for record in records),
                      "forward_ms": statistics.median(forward), "frames": len(records)}))


def run_worker(args, variant: str, size: tuple) -> dict:
    label, width, height, short_side = size
    command = [sys.executable, __file__, "--worker", "--variant", variant, "--width", str(width), "--height",
               str(height), "--short-side", str(short_side), "--checkpoint", args.checkpoint, "--onnx-file",
               args.onnx_file, "--frames", str(args.frames), "--threads", str(args.threads)]
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench_backends: {variant} at {label} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="", help="robustseg checkpoint; default the shipped student")
    parser.add_argument("--frames", type=int, default=12, help="frames per backend and size (the first is dropped)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; medians over all rounds' frames")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of every backend")
    parser.add_argument("--variants", nargs="*", default=None, help=f"subset of {', '.join(VARIANTS)}")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--short-side", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--onnx-file", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from robustseg_core.deploy.export import export_onnx
    from robustseg_ros.params import resolve_checkpoint

    args.checkpoint = str(resolve_checkpoint(args.checkpoint))
    args.onnx_file = str(Path(tempfile.mkdtemp(prefix="bench_backends_")) / "model.onnx")
    print(f"export_onnx: {export_onnx(args.checkpoint, args.onnx_file).summary()}")
    variants = args.variants or installed_variants()
    results: dict = {}
    for _ in range(args.rounds):
        for size in SIZES:
            for variant in variants:
                result = run_worker(args, variant, size)
                entry = results.setdefault((size[0], variant), {**result, "end_to_end": [], "forward": []})
                entry["end_to_end"].append(result["end_to_end_ms"])
                entry["forward"].append(result["forward_ms"])
    print(f"checkpoint {args.checkpoint}; {args.threads} threads per backend, {args.frames - 1} frames x "
          f"{args.rounds} round(s) each, medians (ms); speed-up = torch / backend")
    print(f"{'size':<18}{'backend':<14}{'precision':<11}{'short side':>11}{'end to end':>12}{'speed-up':>9}"
          f"{'forward':>10}{'speed-up':>9}")
    best = {}
    for size in SIZES:
        torch_row = results[(size[0], "torch")]
        torch_e2e, torch_forward = statistics.median(torch_row["end_to_end"]), statistics.median(torch_row["forward"])
        for variant in variants:
            row = results[(size[0], variant)]
            e2e, forward = statistics.median(row["end_to_end"]), statistics.median(row["forward"])
            print(f"{size[0]:<18}{variant:<14}{row['precision']:<11}{row['short_side']:>11}{e2e:>12.1f}"
                  f"{torch_e2e / e2e:>8.2f}x{forward:>10.1f}{torch_forward / forward:>8.2f}x")
            if variant != "torch" and variant != "tensorrt":
                best[size[0]] = max(best.get(size[0], (0.0, "")), (torch_e2e / e2e, variant))
    for label, (ratio, variant) in best.items():
        verdict = "met" if ratio >= TARGET else "MISSED"
        print(f"best CPU backend at {label}: {variant}, {ratio:.2f}x torch eager end to end "
              f"(target >= {TARGET}x: {verdict})")


if __name__ == "__main__":
    main()
