"""The GPU check's parts (``bench/gpu_check.sh`` installs what they need and runs this): one results file.

Parts, each in its own process with its own time limit inside the whole check's budget:

* ``node``: perception_node on CUDA, fp16, mit_b0 with the 768 head (random weights), 1024 x 1024 camera at
  network input 1024 x 1024: ``bench/bench_node.py`` (end to end, bare forward, their ratio);
* ``training``: ``train_teacher`` then ``train_student`` (config/teacher.yaml, config/student.yaml: mit_b0,
  768 head, 256 crops, batch 8, AMP bf16) for 3 epochs on a small generated data set; steps/s of the last epoch;
* ``ddp``: one DDP training step loop under ``torchrun --standalone --nproc_per_node=1`` with the nccl
  backend and AMP (the training scripts use DDP only for two or more processes, so this part sets it up itself);
* ``tensorrt``: the tensorrt backend (onnxruntime's TensorRT execution provider, fp16) against torch fp16 on
  the same model and frame: label agreement, confidence difference, forward and end-to-end medians.

Without CUDA every part is skipped, saying so. ``--smoke`` runs the node, training and ddp parts on the CPU
at toy sizes (gloo instead of nccl), to check the commands themselves.

    python bench/gpu_check.py --out runs/gpu_check/results.md [--budget-s 420]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Sizes of a real run on CUDA and of a CPU smoke run.
SETTINGS = {
    "cuda": {"preset": "mit_b0", "embed_dim": 768, "camera": 1024, "data_size": 256, "crop": 256, "batch": 8,
             "frames": 12, "device": "cuda"},
    "smoke": {"preset": "mit_cpu", "embed_dim": 32, "camera": 64, "data_size": 64, "crop": 64, "batch": 2,
              "frames": 3, "device": "cpu"},
}
#: Each part's own limit (s), in the order they run; the whole check's budget caps them further.
PART_LIMITS_S = {"node": 90, "tensorrt": 120, "ddp": 60, "training": 150}


def run(command: list[str], limit_s: float, cwd: Path = ROOT) -> tuple[int | None, str, float]:
    """Run ``command``; (exit code or None on timeout, its output, seconds taken)."""
    start = time.monotonic()
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=limit_s,
                              check=False)
        return done.returncode, done.stdout + done.stderr, time.monotonic() - start
    except subprocess.TimeoutExpired as expired:
        output = (expired.stdout or b"").decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        return None, output, time.monotonic() - start


def part_node(settings: dict, work: Path, limit_s: float) -> tuple[str, str]:
    size = settings["camera"]
    command = [sys.executable, "bench/bench_node.py", "--preset", settings["preset"], "--embed-dim",
               str(settings["embed_dim"]), "--width", str(size), "--height", str(size), "--frames",
               str(settings["frames"]), "--device", settings["device"], "--stream-s", "1.5"]
    code, output, _ = run(command, limit_s)
    wanted = [line for line in output.splitlines() if line.startswith(("model:", "end to end", "bare forward", "infer",
                                                                     "LiDAR", "frames processed"))]
    return status(code, output), "\n".join(wanted)


def epoch_seconds_per_step(output: str) -> float | None:
    """s/step of the last "epoch N: loss ..., X s/step" line of a training script."""
    found = re.findall(r"^epoch \d+: loss [^,]+, ([0-9.]+) s/step", output, flags=re.MULTILINE)
    return float(found[-1]) if found else None


def part_training(settings: dict, work: Path, limit_s: float) -> tuple[str, str]:
    deadline = time.monotonic() + limit_s
    data = work / "data"
    code, output, seconds = run([sys.executable, "-m", "robustseg_core.sim.generate", "--out", str(data), "--size",
                                 str(settings["data_size"]), "--train-scenes", "8", "--val-scenes", "1",
                                 "--test-scenes", "0", "--frames-per-scene", "4", "--workers",
                                 str(min(8, os.cpu_count() or 1)), "--quiet"], deadline - time.monotonic())
    lines = [f"data: 32 train / 4 val frames at {settings['data_size']} px generated in {seconds:.0f} s"]
    if code != 0:
        return status(code, output), "\n".join(lines)
    common = [f"data.root={data}", f"data.crop_size={settings['crop']}", f"data.eval_size={settings['crop']}",
              f"data.batch_size={settings['batch']}", "data.workers=0", "data.cache=true", "train.epochs=3",
              "train.eval_every=3", "train.val_combinations=[RDEL]", f"model.preset={settings['preset']}",
              f"model.embed_dim={settings['embed_dim']}", "model.pretrained=null", f"train.device={settings['device']}"]
    teacher = work / "teacher"
    runs = (("teacher", ["robustseg_core.training.train_teacher", "--config", "config/teacher.yaml", "--set",
                         *common, f"train.output_dir={teacher}"]),
            ("student", ["robustseg_core.training.train_student", "--config", "config/student.yaml", "--set",
                         *common, f"train.output_dir={work / 'student'}", f"teacher.checkpoint={teacher / 'last.pt'}"]))
    for name, arguments in runs:
        code, output, seconds = run([sys.executable, "-m", *arguments], deadline - time.monotonic())
        step_s = epoch_seconds_per_step(output)
        rate = f"{1.0 / step_s:.2f} steps/s ({step_s:.3f} s/step, last of 3 epochs)" if step_s else "no epoch line"
        amp = "AMP bf16" if settings["device"] == "cuda" else "no AMP (CPU)"
        lines.append(f"{name}: {rate}, batch {settings['batch']} at {settings['crop']} px, {amp}, {seconds:.0f} s")
        if code != 0:
            return status(code, output), "\n".join(lines)
    return "ok", "\n".join(lines)


def part_ddp(settings: dict, work: Path, limit_s: float) -> tuple[str, str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", __file__,
               "--ddp-worker", "--smoke" if settings["device"] == "cpu" else "--no-smoke"]
    code, output, _ = run(command, limit_s)
    return status(code, output), "\n".join(line for line in output.splitlines() if line.startswith("ddp:"))


def ddp_worker(settings: dict) -> None:
    """Under torchrun: a few AMP training steps of the segmentor wrapped in DistributedDataParallel."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from robustseg_core.losses import OhemCrossEntropy
    from robustseg_core.models import build_segmentor

    cuda = settings["device"] == "cuda"
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    model = build_segmentor(settings["preset"], embed_dim=settings["embed_dim"]).to(device)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-4)
    criterion = OhemCrossEntropy()
    crop, batch = settings["crop"], settings["batch"]
    images = torch.randn(batch, 4, 3, crop, crop, device=device)
    present = torch.ones(batch, 4, dtype=torch.bool, device=device)
    labels = torch.randint(0, 25, (batch, crop, crop), device=device)
    times = []
    for _ in range(8):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = criterion(ddp(images, present), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    check = torch.ones(1, device=device)
    dist.all_reduce(check)
    print(f"ddp: backend {dist.get_backend()}, world size {dist.get_world_size()}, {settings['preset']} "
          f"embed {settings['embed_dim']}, batch {batch} at {crop} px, AMP bf16 {cuda}: "
          f"{1.0 / statistics.median(times[3:]):.2f} steps/s (median of 5 after 3), loss {loss.item():.3f}, "
          f"all_reduce {check.item():.0f}")
    dist.destroy_process_group()


#: Share of pixels on which the tensorrt backend's labels must equal torch's (both fp16; random weights, so
#: near-ties flip a few labels).
MIN_TENSORRT_AGREEMENT = 0.98


def part_tensorrt(settings: dict, work: Path, limit_s: float) -> tuple[str, str]:
    code, output, _ = run([sys.executable, __file__, "--tensorrt-worker", str(work)], limit_s)
    lines = [line for line in output.splitlines() if line.startswith("tensorrt:")]
    if code == 0 and any("skipped" in line for line in lines):
        return "skipped", "\n".join(lines)
    return status(code, output), "\n".join(lines)


def tensorrt_worker(work: Path) -> None:
    """torch fp16 against the tensorrt backend fp16 on mit_b0 + 768 head at 1024 x 1024."""
    import numpy as np
    import onnxruntime
    import torch

    if hasattr(onnxruntime, "preload_dlls"):
        onnxruntime.preload_dlls()  # CUDA and cuDNN from the nvidia pip packages torch brought
    if "TensorrtExecutionProvider" not in onnxruntime.get_available_providers():
        print(f"tensorrt: skipped: onnxruntime providers {onnxruntime.get_available_providers()} lack TensorRT")
        return
    from robustseg_core.deploy.export import export_onnx
    from robustseg_core.inference import Segmenter
    from robustseg_core.models import build_segmentor
    from robustseg_core.models.checkpoint import checkpoint_meta, save_checkpoint
    from robustseg_core.sim.drive import Drive, DriveConfig, encode_frame

    torch.manual_seed(0)
    model = build_segmentor("mit_b0", embed_dim=768)
    checkpoint, onnx_file = work / "b0_768.pt", work / "b0_768.onnx"
    save_checkpoint(checkpoint, {"model": model.state_dict(), "architecture": model.architecture,
                                 "meta": checkpoint_meta({"data": {"eval_size": 1024}})})
    print(f"tensorrt: export {export_onnx(checkpoint, onnx_file).summary()}", flush=True)
    frame = Drive(3, DriveConfig(width=1024, height=1024)).frame(1)
    encoded = encode_frame(frame)
    images = {"rgb": encoded["rgb"], "depth": encoded["hha"], "event": encoded["event"], "lidar": encoded["lidar"]}
    results = {}
    for name, backend in (("torch fp16", "torch"), ("tensorrt fp16", "tensorrt")):
        start = time.perf_counter()
        segmenter = Segmenter(checkpoint, device="cuda", fp16=True, backend=backend, onnx_file=None
                              if backend == "torch" else onnx_file)
        segmenter.warmup(1024, 1024, 3)
        ready_s = time.perf_counter() - start
        tensor, present = segmenter.prepare(images, 1024, 1024)
        forward, end_to_end = [], []
        for _ in range(20):
            began = time.perf_counter()
            segmenter.backend.run(tensor, present)
            forward.append((time.perf_counter() - began) * 1e3)
            began = time.perf_counter()
            result = segmenter.predict(images)
            end_to_end.append((time.perf_counter() - began) * 1e3)
        results[name] = result
        print(f"tensorrt: {name}: forward {statistics.median(forward):.2f} ms, predict (pre + forward + post) "
              f"{statistics.median(end_to_end):.2f} ms, medians of 20; ready (load, engine build, warm-up) in "
              f"{ready_s:.1f} s", flush=True)
    reference, tensorrt = results["torch fp16"], results["tensorrt fp16"]
    agreement = float((reference.labels == tensorrt.labels).mean())
    difference = float(np.abs(reference.confidence - tensorrt.confidence).max())
    print(f"tensorrt: parity with torch fp16: labels agree on {100 * agreement:.3f} % of pixels, largest confidence "
          f"difference {difference:.4f} (providers {segmenter.backend.session.get_providers()})")
    if agreement < MIN_TENSORRT_AGREEMENT:  # the part fails: its exit status is checked by part_tensorrt
        sys.exit(f"tensorrt: labels agree on {100 * agreement:.3f} % of pixels, below "
                 f"{100 * MIN_TENSORRT_AGREEMENT:.0f} %")


def status(code: int | None, output: str) -> str:
    if code is None:
        return "failed: time limit"
    if code != 0:
        tail = " | ".join(output.strip().splitlines()[-3:])
        return f"failed: exit code {code}: {tail}"
    return "ok"


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return (f"{platform.node()}: {gpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch "
            f"{torch.__version__} (CUDA {torch.version.cuda})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/gpu_check/results.md", help="the results file (Markdown)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="seconds for all parts together")
    parser.add_argument("--smoke", action="store_true", help="no CUDA: run node, training and ddp on the CPU, tiny")
    parser.add_argument("--no-smoke", dest="smoke", action="store_false", help=argparse.SUPPRESS)
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tensorrt-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = SETTINGS["smoke" if args.smoke else "cuda"]
    if args.ddp_worker:
        ddp_worker(settings)
        return
    if args.tensorrt_worker:
        tensorrt_worker(Path(args.tensorrt_worker))
        return

    import torch

    cuda = torch.cuda.is_available()
    deadline = time.monotonic() + args.budget_s
    parts = {"node": part_node, "tensorrt": part_tensorrt, "ddp": part_ddp, "training": part_training}
    report = [f"# GPU check ({'CPU smoke run' if args.smoke else 'CUDA run'})", "",
              f"- machine: {machine()}", f"- command: `bash bench/gpu_check.sh` ({' '.join(sys.argv)})",
              f"- started: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}", ""]
    summary = {}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as folder:
        for name, function in parts.items():
            remaining = deadline - time.monotonic()
            if not cuda and not (args.smoke and name != "tensorrt"):
                result, details, seconds = "skipped: no CUDA device (torch.cuda.is_available() is False)", "", 0.0
            elif remaining < 10:
                result, details, seconds = "skipped: the check's time budget is spent", "", 0.0
            else:
                work = Path(folder) / name
                work.mkdir()
                start = time.monotonic()
                result, details = function(settings, work, min(PART_LIMITS_S[name], remaining))
                seconds = time.monotonic() - start
            summary[name] = result
            print(f"gpu_check: {name}: {result} ({seconds:.0f} s)", flush=True)
            report += [f"## {name}: {result} ({seconds:.0f} s)", "", "```", details or "(no output)", "```", ""]
    report += ["```json", json.dumps(summary, indent=1), "```", ""]
    from robustseg_core.atomic import write_text_atomic

    write_text_atomic(args.out, "\n".join(report))
    print(f"gpu_check: wrote {args.out}")


if __name__ == "__main__":
    main()
