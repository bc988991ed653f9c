"""``make demo-training``: generate a small scene data set, train a teacher briefly, evaluate all 15 combinations.

    python -m robustseg_core.demo --out runs/demo

Everything lands under ``--out``: ``data/`` (DELIVER layout), ``teacher/`` (checkpoints, logs),
``teacher_eval.json`` and ``teacher_eval.md``. The data set is reused when it already exists.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .cli import console_script
from .evaluation.evaluate import main as evaluate
from .sim.generate import main as generate
from .training.train_teacher import main as train_teacher

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "teacher_cpu.yaml"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="teacher config (default: config/teacher_cpu.yaml)")
    parser.add_argument("--size", type=int, default=128, help="generated frame size (px)")
    parser.add_argument("--train-scenes", type=int, default=10)
    parser.add_argument("--val-scenes", type=int, default=5)
    parser.add_argument("--frames-per-scene", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    data = args.out / "data"
    if not (data / "meta.json").exists():
        print(f"[demo] generating scenes into {data}")
        generate([
            "--out", str(data), "--size", str(args.size), "--seed", str(args.seed),
            "--train-scenes", str(args.train_scenes), "--val-scenes", str(args.val_scenes), "--test-scenes", "0",
            "--frames-per-scene", str(args.frames_per_scene),
        ])
    print(f"[demo] training the teacher for {args.epochs} epochs ({args.config})")
    train_teacher([
        "--config", str(args.config), "--set", f"data.root={data}", f"train.epochs={args.epochs}",
        f"train.output_dir={args.out / 'teacher'}", "train.tensorboard=false", "--resume", "auto",
        "--allow-config-change",  # a second demo continues the first, with more epochs if asked
    ])
    print("[demo] evaluating all 15 modality combinations")
    result = evaluate([
        "--checkpoint", str(args.out / "teacher" / "best.pt"), "--data-root", str(data), "--split", "val",
        "--json", str(args.out / "teacher_eval.json"), "--markdown", str(args.out / "teacher_eval.md"),
    ])
    print(f"[demo] done in {time.perf_counter() - start:.0f} s; results in {args.out}")
    return result


if __name__ == "__main__":
    sys.exit(console_script(main, "robustseg_core.demo")())
