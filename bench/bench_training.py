"""Training speed on this machine: steps/s of the teacher and the student step with and without the
speed settings, side by side in one run, and each part's share of a step.

Both variants run the engine's own loop (``engine.train_one_epoch``: real data loader, AdamW,
schedule, finite checks, CSV logging with gradient norms) on the CPU configs, in alternating chunks
of ``--steps`` steps so that load changes on the machine hit both alike:

* ``before``: the configs as the earlier sessions trained them: PNGs decoded every epoch by one
  loader worker process, every loss term's gradient norm on every 20th step, the SegFormer head
  computed in its concatenating form (``--head concat``, the code before the re-associated head);
* ``after``: ``data.cache`` (decoded frames kept in memory, transforms in the training process,
  ``data.workers 0``), gradient norms every 100th step, the re-associated head;
* ``after+channels_last`` / ``after+compile`` (with ``--channels-last`` / ``--compile``): ``after`` plus
  ``train.channels_last`` / ``train.compile``, a third (fourth) variant in the same alternation, so
  that each setting's own effect is measured side by side with ``after``.

Gradient norms cost one extra backward pass per loss term on the steps that log them; the chunks
run without them and each variant's per-step cost of them (the time of one step's norms divided by
how often they are logged) is measured on the same batch and added to its bookkeeping.

Parts of a step: ``data`` (waiting for the batch), the student's encoder and head, the frozen
teacher's forward, ``losses`` (the rest of the step function: dropout, OHEM CE, KL, HPDM, RRM),
``backward``, ``optimizer`` and ``bookkeeping`` (finite checks, gradient norms, logging).

Run: ``.venv/bin/python bench/bench_training.py [--data-root data/sim128] [--steps 10] [--rounds 3]
[--threads 1] [--channels-last] [--compile] [--only teacher|student]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from robustseg_core.losses import OhemCrossEntropy
from robustseg_core.training.config import load_config
from robustseg_core.training.distributed import setup_distributed
from robustseg_core.training.engine import _grad_norm, build_loaders, train_one_epoch
from robustseg_core.training.logger import ScalarLogger
from robustseg_core.training.optim import WarmupPolyLR, build_optimizer
from robustseg_core.training.step_timer import StepTimer
from robustseg_core.training.train_student import DEFAULTS as STUDENT_DEFAULTS
from robustseg_core.training.train_student import student_step
from robustseg_core.training.train_teacher import DEFAULTS as TEACHER_DEFAULTS
from robustseg_core.training.train_teacher import build_model, teacher_step

#: Gradient-norm logging period of the old configuration and of the new ones (steps).
GRAD_NORM_EVERY = {"before": 20, "after": 100}
PART_ORDER = ("data", "student encoder", "student head", "teacher forward", "losses", "backward", "optimizer",
              "bookkeeping")


@contextmanager
def timed_modules(timer: StepTimer, modules: dict[str, torch.nn.Module]):
    """Charge each module's forward passes to the part of its name (hooks; removed on exit)."""
    handles, starts = [], {}
    for name, module in modules.items():
        def pre(_module, _inputs, name=name):
            starts[name] = time.perf_counter()

        def post(_module, _inputs, _output, name=name):
            timer.seconds[name] += time.perf_counter() - starts.pop(name)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def concatenating_head_forward(head: torch.nn.Module, features: list[torch.Tensor]) -> torch.Tensor:
    """The SegFormer head as it was computed before: project, upsample, concatenate, 1x1 fuse conv."""
    output_size = features[0].shape[2:]
    upsampled = []
    for feature, projection in zip(features, head.projections):
        projected = projection(feature.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if projected.shape[2:] != output_size:
            projected = F.interpolate(projected, size=output_size, mode="bilinear", align_corners=False)
        upsampled.append(projected)
    return head.classifier(head.dropout(head.fuse(torch.cat(upsampled[::-1], dim=1))))


def use_concatenating_head(model: torch.nn.Module) -> None:
    model.head.forward = lambda features, head=model.head: concatenating_head_forward(head, features)


class Variant:
    """One training set-up (config + model + optimiser + loader) whose steps can be run in chunks."""

    def __init__(self, kind: str, overrides: list[str], data_root: str, log_dir: Path, old_head: bool) -> None:
        defaults, path = (TEACHER_DEFAULTS, "config/teacher_cpu.yaml") if kind == "teacher" else \
            (STUDENT_DEFAULTS, "config/student_cpu.yaml")
        self.config = load_config(defaults, path, [f"data.root={data_root}", "train.device=cpu", *overrides])
        self.ctx = setup_distributed("cpu")
        self.model = build_model(self.config)
        if old_head:
            use_concatenating_head(self.model)
        if self.config["train"]["channels_last"]:
            self.model.to(memory_format=torch.channels_last)
        if kind == "teacher":
            self.step = teacher_step(OhemCrossEntropy(0.7))
            self.teacher = None
        else:
            self.teacher = build_model(self.config).eval().requires_grad_(False)
            if old_head:
                use_concatenating_head(self.teacher)
            self.step = student_step(self.teacher, self.config)
        self.train_model = torch.compile(self.model, dynamic=True) if self.config["train"]["compile"] else self.model
        self.loader, _ = build_loaders(self.config["data"], self.ctx, seed=0)
        self.optimizer = build_optimizer(self.model, 1e-4)
        self.scheduler = WarmupPolyLR(self.optimizer, total_steps=10**6, warmup_steps=0)
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)
        self.logger = ScalarLogger(log_dir, tensorboard=False)
        self.epoch = 0

    def grad_norm_seconds(self) -> float:
        """Seconds the gradient norms of every loss term take on one step (one batch)."""
        batch = next(iter(self.loader))
        self.model.train()
        terms = self.step(self.train_model, batch)
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        start = time.perf_counter()
        for name, value in terms.items():
            if name != "loss":
                _grad_norm(value, parameters)
        return time.perf_counter() - start

    def run(self, steps: int) -> tuple[float, dict[str, float]]:
        """Seconds per step over ``steps`` steps and the mean seconds per step of each part."""
        timer = StepTimer()
        modules = {"student encoder": self.model.encoder, "student head": self.model.head}
        if self.teacher is not None:
            modules["teacher forward"] = self.teacher
        self.config["train"]["max_steps_per_epoch"] = steps
        start = time.perf_counter()
        with timed_modules(timer, modules):
            train_one_epoch(self.train_model, self.step, self.optimizer, self.scheduler, self.scaler, self.loader,
                            self.ctx, self.epoch, self.config, self.logger, Path("none"), timer)
        elapsed = (time.perf_counter() - start) / steps
        self.epoch += 1
        parts = timer.per_step()
        model_parts = sum(parts.get(name, 0.0) for name in ("student encoder", "student head", "teacher forward"))
        parts["losses"] = parts.pop("forward", 0.0) - model_parts
        return elapsed, parts


def compare(kind: str, args, log_root: Path) -> None:
    after_overrides = ["data.cache=true", "data.workers=0", f"train.grad_norm_every={GRAD_NORM_EVERY['after']}"]
    before_overrides = ["data.cache=false", f"train.grad_norm_every={GRAD_NORM_EVERY['before']}"]
    overrides = {"before": before_overrides, "after": after_overrides}
    for setting, wanted in (("channels_last", args.channels_last), ("compile", args.compile)):
        if wanted:
            overrides[f"after+{setting}"] = [*after_overrides, f"train.{setting}=true"]
    variants = {name: Variant(kind, values, args.data_root, log_root / f"{kind}_{name}", old_head=name == "before")
                for name, values in overrides.items()}
    grad_norm_every = {name: GRAD_NORM_EVERY["before" if name == "before" else "after"] for name in variants}
    grad_norm_cost = {name: variant.grad_norm_seconds() / grad_norm_every[name] for name, variant in variants.items()}
    for variant in variants.values():  # the chunks run without them; their amortised cost is added below
        variant.config["train"]["grad_norm_every"] = 0
    for variant in variants.values():  # warm-up: fills the cache, builds compiled graphs, starts workers
        variant.run(args.warmup)
        if variant.config["data"]["cache"]:
            for index in range(len(variant.loader.dataset)):
                variant.loader.dataset.load(index)
    times = {name: [] for name in variants}
    parts = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, variant in variants.items():
            seconds, split = variant.run(args.steps)
            split["bookkeeping"] = split.get("bookkeeping", 0.0) + grad_norm_cost[name]
            times[name].append(seconds + grad_norm_cost[name])
            parts[name].append(split)
    print(f"\n== {kind} step ({variants['before'].config['model']['preset']}, batch "
          f"{variants['before'].config['data']['batch_size']}, {variants['before'].config['data']['crop_size']} px, "
          f"{torch.get_num_threads()} thread(s); {args.rounds} rounds of {args.steps} steps, alternating)")
    for name, values in overrides.items():
        print(f"{name} = {' '.join(values)}, {'concatenating' if name == 'before' else 're-associated'} head")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name in variants:
        print(f"{name:>22}: {1 / medians[name]:.2f} steps/s (median {medians[name] * 1000:.0f} ms/step; rounds "
              + ", ".join(f"{v * 1000:.0f}" for v in times[name]) + " ms)")
    for name in variants:
        if name != "before":
            print(f"speed-up {name}/before: {medians['before'] / medians[name]:.2f}x")
    for name in variants:
        if name.startswith("after+"):
            print(f"speed-up {name}/after: {medians['after'] / medians[name]:.2f}x")
    print(f"{'part (ms/step, share)':<24}" + "".join(f"{name:>22}" for name in variants))
    for part in PART_ORDER:
        row = []
        for name in variants:
            value = statistics.median(split.get(part, 0.0) for split in parts[name])
            row.append(f"{value * 1000:9.1f} ({100 * value / medians[name]:5.1f} %)")
        if any(part in split for name in variants for split in parts[name]):
            print(f"{part:<24}" + "".join(f"{cell:>22}" for cell in row))
    for name in variants:
        overhead = statistics.median(split.get("data", 0.0) + split.get("bookkeeping", 0.0) for split in parts[name])
        print(f"data + bookkeeping, {name}: {100 * overhead / medians[name]:.1f} % of a step (target <= 10 %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="data/sim128", help="benchmark data (make benchmark-data)")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed chunk")
    parser.add_argument("--rounds", type=int, default=3, help="alternating chunks per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--channels-last", action="store_true", help="also 'after' with channels_last")
    parser.add_argument("--compile", action="store_true", help="also 'after' with torch.compile")
    parser.add_argument("--only", choices=("teacher", "student"), help="one of the two steps")
    args = parser.parse_args()
    if not Path(args.data_root, "meta.json").is_file():
        sys.exit(f"bench_training: error: {args.data_root} is not a generated data set (run make benchmark-data)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as log_root:
        for kind in ("teacher", "student"):
            if args.only in (None, kind):
                compare(kind, args, Path(log_root))


if __name__ == "__main__":
    main()
