"""The training loop shared by the teacher and student scripts.

A script defines its config defaults, builds its model and a *step function* that turns a batch into
named loss terms; :func:`fit` does the rest: data loaders (sharded under DDP), AdamW with warm-up +
poly, AMP on CUDA, epoch seeding, validation, atomic checkpoints, ``--resume``, CSV / TensorBoard
logs with every term and its gradient norm, and a clear stop when a loss becomes NaN.
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from ..atomic import write_text_atomic
from ..classes import MODALITIES
from ..data import DeliverDataset, EvalTransform, TrainTransform, collate
from ..evaluation import evaluate_combinations
from ..models.checkpoint import CheckpointError, checkpoint_meta, load_checkpoint, load_model_state, save_checkpoint
from .distributed import DistributedContext, ShardSampler, reduce_mean
from .logger import ScalarLogger
from .optim import WarmupPolyLR, build_optimizer
from .step_timer import StepTimer, no_timer

#: step(model, batch) -> {"loss": total to minimise, <term>: weighted term, ...}; ``model`` may be
#: wrapped in DistributedDataParallel; ``batch`` is already on the device.
StepFunction = Callable[[torch.nn.Module, dict], dict]

#: Sections and keys every training config has (a script adds its own sections).
TRAINING_DEFAULTS = {
    "data": {
        "root": "data/sim",
        "train_split": "train",
        "val_split": "val",
        "conditions": None,
        "cases": None,
        "crop_size": 256,
        "eval_size": 256,
        "batch_size": 8,
        "eval_batch_size": 8,
        "workers": 2,
        "cache": False,
    },
    "model": {"preset": "mit_b0", "embed_dim": 768, "drop_path_rate": 0.1, "pretrained": None},
    "optim": {"lr": 6e-5, "weight_decay": 0.01, "warmup_epochs": 10, "warmup_ratio": 0.1, "poly_power": 0.9},
    "train": {
        "epochs": 200,
        "seed": 3407,
        "amp": True,
        "amp_dtype": "bfloat16",
        "device": "auto",
        "output_dir": "runs/teacher",
        "eval_every": 1,
        "val_combinations": ["RDEL"],
        "log_every": 10,
        "grad_norm_every": 100,
        "max_steps_per_epoch": 0,
        "tensorboard": True,
        "channels_last": False,
        "compile": False,
    },
}


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the message names the step, the term and the last good checkpoint."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_loaders(data: Mapping, ctx: DistributedContext, seed: int) -> tuple[DataLoader, DataLoader]:
    """Train loader (random crops, shuffled, sharded under DDP) and val loader (eval size, sharded)."""
    common = dict(root=data["root"], modalities=MODALITIES, conditions=data["conditions"], cases=data["cases"],
                  cache=data["cache"])
    train_set = DeliverDataset(split=data["train_split"], transform=TrainTransform(data["crop_size"]), **common)
    val_set = DeliverDataset(split=data["val_split"], transform=EvalTransform(data["eval_size"]), **common)
    global_batch = data["batch_size"] * ctx.world_size
    if len(train_set) < global_batch:
        raise ValueError(
            f"{train_set}: {len(train_set)} samples, fewer than one global batch "
            f"({data['batch_size']} x {ctx.world_size} processes)"
        )
    if ctx.is_distributed:
        train_sampler = DistributedSampler(train_set, ctx.world_size, ctx.rank, shuffle=True, seed=seed, drop_last=True)
    else:
        train_sampler = RandomSampler(train_set, generator=torch.Generator().manual_seed(seed))
    workers = data["workers"]
    # A cache lives in the process that decodes: workers must then outlive the epoch.
    keep_workers = bool(data["cache"]) and workers > 0
    train_loader = DataLoader(
        train_set, batch_size=data["batch_size"], sampler=train_sampler, num_workers=workers,
        collate_fn=collate, drop_last=True, pin_memory=ctx.device.type == "cuda", persistent_workers=keep_workers,
    )
    val_loader = DataLoader(
        val_set, batch_size=data["eval_batch_size"], sampler=ShardSampler(val_set, ctx.rank, ctx.world_size),
        num_workers=workers, collate_fn=collate, pin_memory=ctx.device.type == "cuda", persistent_workers=keep_workers,
    )
    return train_loader, val_loader


def set_epoch(loader: DataLoader, epoch: int, seed: int) -> None:
    """Make epoch ``epoch``'s shuffling depend only on (seed, epoch). Augmentation follows too: the
    workers are created anew each epoch and seeded from the torch RNG, which the caller reseeds with
    (seed, epoch, rank)."""
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    elif isinstance(sampler, RandomSampler) and sampler.generator is not None:
        sampler.generator.manual_seed(seed + epoch)


def validate(model: torch.nn.Module, loader: DataLoader, ctx: DistributedContext, combinations: Sequence[str]) -> dict:
    """mIoU of each modality combination ("drop" convention) over the whole val split, summed over
    all processes; ``score`` is their mean, the number that selects ``best.pt``."""
    matrices = evaluate_combinations(model, loader, ctx.device, combinations, ["drop"])["drop"]
    metrics = {}
    for name, matrix in matrices.items():
        matrix.all_reduce()
        summary = matrix.summary()
        metrics[f"miou_{name}"] = summary["miou"]
        metrics[f"miou_present_{name}"] = summary["miou_present"]
    metrics["score"] = sum(metrics[f"miou_{name}"] for name in combinations) / len(combinations)
    return metrics


def check_finite(terms: Mapping[str, torch.Tensor], step: int, last_checkpoint: Path | None) -> None:
    """Raise TrainingDiverged naming the first non-finite loss term, on every process when any has one
    (so no rank is left waiting in a collective)."""
    bad = next(((name, float(value.detach())) for name, value in terms.items()
                if not math.isfinite(float(value.detach()))), None)
    flag = torch.tensor([0.0 if bad is None else 1.0], device=next(iter(terms.values())).device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(flag)
    if flag.item() > 0:
        where = str(last_checkpoint) if last_checkpoint and last_checkpoint.exists() else "none written yet"
        what = f"loss term {bad[0]!r} is {bad[1]}" if bad else "a loss term is not finite on another process"
        raise TrainingDiverged(f"step {step}: {what}; last good checkpoint: {where}")


def _grad_norm(value: torch.Tensor, parameters: list[torch.nn.Parameter]) -> float:
    """L2 norm of d(value)/d(parameters), leaving the graph in place for the real backward pass."""
    if not value.requires_grad:
        return 0.0
    grads = torch.autograd.grad(value, parameters, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))


def train_one_epoch(
    model: torch.nn.Module,
    step_function: StepFunction,
    optimizer: torch.optim.Optimizer,
    scheduler: WarmupPolyLR,
    scaler: torch.amp.GradScaler,
    loader: DataLoader,
    ctx: DistributedContext,
    epoch: int,
    config: dict,
    logger: ScalarLogger | None,
    last_checkpoint: Path,
    timer: StepTimer | None = None,
) -> dict:
    """One pass over the train loader; returns the epoch's mean of every term and the step time.

    ``timer`` (optional) accumulates the wall time of each part of a step: ``data`` (waiting for the
    batch and moving it to the device), ``forward`` (the step function: model passes and losses),
    ``backward``, ``optimizer`` and ``bookkeeping`` (finite checks, gradient-norm and scalar logging).
    """
    model.train()
    train_cfg = config["train"]
    amp = train_cfg["amp"] and ctx.device.type == "cuda"
    amp_dtype = getattr(torch, train_cfg["amp_dtype"])
    steps = min(train_cfg["max_steps_per_epoch"] or len(loader), len(loader))
    parameters = [p for p in model.parameters() if p.requires_grad]
    part = timer.part if timer is not None else no_timer
    totals: dict[str, float] = {}
    start = time.perf_counter()
    progress = tqdm(total=steps, desc=f"epoch {epoch}", disable=not (ctx.is_main and sys.stderr.isatty()), leave=False)
    batches = iter(loader)
    for _ in range(steps):
        with part("data"):
            batch = {k: v.to(ctx.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in next(batches).items()}
        step = scheduler.last_epoch
        with part("forward"), torch.autocast(ctx.device.type, dtype=amp_dtype, enabled=amp):
            terms = step_function(model, batch)
        with part("bookkeeping"):
            check_finite(terms, step, last_checkpoint)
            grad_norms = {}
            if train_cfg["grad_norm_every"] and step % train_cfg["grad_norm_every"] == 0:
                grad_norms = {f"grad_norm_{k}": _grad_norm(v, parameters) for k, v in terms.items() if k != "loss"}
            log_now = logger is not None and (step % train_cfg["log_every"] == 0 or bool(grad_norms))
        with part("backward"):
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(terms["loss"]).backward()
        with part("optimizer"):
            scaler.unscale_(optimizer)
            grad_norms["grad_norm_total"] = float(torch.nn.utils.clip_grad_norm_(parameters, float("inf")))
            lr = scheduler.get_last_lr()[0]  # the rate this step used
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
        with part("bookkeeping"):
            values = {k: float(reduce_mean(v.detach().float())) for k, v in terms.items()}
            for key, value in values.items():
                totals[key] = totals.get(key, 0.0) + value
            progress.update()
            progress.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{lr:.2e}")
            if log_now:
                logger.log("train", step, {"epoch": epoch, "lr": lr, **values, **grad_norms})
        if timer is not None:
            timer.steps += 1
    progress.close()
    elapsed = time.perf_counter() - start
    return {**{k: v / steps for k, v in totals.items()}, "step_time_s": elapsed / steps}


def fit(
    config: dict,
    ctx: DistributedContext,
    segmentor: torch.nn.Module,
    step_function: StepFunction,
    resume: str | None = None,
    description: str = "model",
) -> dict:
    """Train ``segmentor`` (already on ``ctx.device``) with ``step_function``; returns the best validation
    metrics plus ``train_seconds`` (wall time of all epochs, over resumes) and ``steps`` (optimiser steps).

    Writes ``last.pt`` every epoch (resumable: optimiser, scheduler, scaler, epoch, best) and
    ``best.pt`` (weights and metadata) whenever the validation score improves.
    """
    train_cfg, data_cfg, optim_cfg = config["train"], config["data"], config["optim"]
    output_dir = Path(train_cfg["output_dir"])
    seed = train_cfg["seed"]
    train_loader, val_loader = build_loaders(data_cfg, ctx, seed)
    if train_cfg["channels_last"]:  # before the optimiser sees the parameters
        segmentor.to(memory_format=torch.channels_last)
    model = segmentor
    if ctx.is_distributed:
        if ctx.device.type == "cuda":  # the head's BatchNorm sees the global batch, as SegFormer trains it
            segmentor = torch.nn.SyncBatchNorm.convert_sync_batchnorm(segmentor)
        model = DistributedDataParallel(segmentor, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if train_cfg["compile"]:  # the training forward only; checkpoints and validation use the plain module
        model = torch.compile(model, dynamic=True)

    steps_per_epoch = min(train_cfg["max_steps_per_epoch"] or len(train_loader), len(train_loader))
    optimizer = build_optimizer(segmentor, optim_cfg["lr"], optim_cfg["weight_decay"])
    scheduler = WarmupPolyLR(
        optimizer, total_steps=train_cfg["epochs"] * steps_per_epoch,
        warmup_steps=optim_cfg["warmup_epochs"] * steps_per_epoch,
        warmup_ratio=optim_cfg["warmup_ratio"], power=optim_cfg["poly_power"],
    )
    use_scaler = train_cfg["amp"] and ctx.device.type == "cuda" and train_cfg["amp_dtype"] == "float16"
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=use_scaler)

    last_path, best_path = output_dir / "last.pt", output_dir / "best.pt"
    start_epoch, best, train_seconds = 0, {"score": -1.0}, 0.0
    resume_path = last_path if resume == "auto" else Path(resume) if resume else None
    if resume_path is not None and (resume != "auto" or resume_path.exists()):
        checkpoint = load_checkpoint(resume_path, ctx.device)
        missing = [key for key in ("optimizer", "scheduler", "scaler", "epoch", "best") if key not in checkpoint]
        if missing:
            raise CheckpointError(f"{resume_path}: not resumable (no {', '.join(missing)}); resume from last.pt")
        load_model_state(segmentor, checkpoint, resume_path)
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        start_epoch, best = checkpoint["epoch"] + 1, checkpoint["best"]
        train_seconds = float(checkpoint.get("train_seconds", 0.0))
        if ctx.is_main:
            print(f"resumed from {resume_path} at epoch {start_epoch}")

    logger = ScalarLogger(output_dir, tensorboard=train_cfg["tensorboard"]) if ctx.is_main else None
    if ctx.is_main:
        write_text_atomic(output_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        print(f"{description}: {segmentor.architecture} on {ctx.device} x{ctx.world_size}, "
              f"{len(train_loader.dataset)} train / {len(val_loader.dataset)} val frames, {steps_per_epoch} steps/epoch")

    metrics = dict(best)
    for epoch in range(start_epoch, train_cfg["epochs"]):
        epoch_start = time.perf_counter()
        set_epoch(train_loader, epoch, seed)
        seed_everything(seed + 1000 * epoch + ctx.rank)
        stats = train_one_epoch(model, step_function, optimizer, scheduler, scaler, train_loader, ctx, epoch,
                                config, logger, last_path)
        validated = (epoch + 1) % train_cfg["eval_every"] == 0 or epoch == train_cfg["epochs"] - 1
        if validated:
            metrics = {**validate(segmentor, val_loader, ctx, train_cfg["val_combinations"]), "epoch": epoch}
            if metrics["score"] > best["score"]:
                best = metrics
        train_seconds += time.perf_counter() - epoch_start
        if ctx.is_main:
            state = {
                "model": segmentor.state_dict(),
                "architecture": segmentor.architecture,
                "meta": checkpoint_meta(config, metrics, segmentor.modalities),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "best": best,
                "train_seconds": train_seconds,
            }
            save_checkpoint(last_path, state)
            if best.get("epoch") == epoch:
                save_checkpoint(best_path, {k: state[k] for k in ("model", "architecture", "meta", "epoch")})
            scores = {k: v for k, v in metrics.items() if k != "epoch"} if validated else {}
            logger.log("epochs", epoch, stats)
            if validated:
                logger.log("val", epoch, scores)
            score_text = (f"val score {metrics['score']:.2f} (mean mIoU over {'/'.join(train_cfg['val_combinations'])}), "
                          if validated else "")
            print(f"epoch {epoch}: loss {stats['loss']:.4f}, {stats['step_time_s']:.2f} s/step, {score_text}"
                  f"best {best['score']:.2f}")
    if logger is not None:
        logger.close()
    if ctx.is_distributed:  # leave together: rank 0 may still be writing; an early teardown aborts the others
        torch.distributed.barrier()
    return {**best, "train_seconds": train_seconds, "steps": scheduler.last_epoch}
