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
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from ..atomic import remove_stale_temporaries, write_text_atomic
from ..classes import CLASS_NAMES, MODALITIES, list_difference
from ..data import DatasetError, DeliverDataset, EvalTransform, TrainTransform, collate
from ..errors import UserError
from ..evaluation import COMBINATIONS, evaluate_combinations
from ..models import MODEL_PRESETS
from ..models.checkpoint import checkpoint_meta, load_model_state, save_checkpoint
from ..output_folder import FolderLock, check_free_space
from .config import ConfigError
from .distributed import DistributedContext, ShardSampler, reduce_mean
from .logger import ScalarLogger
from .optim import WarmupPolyLR, build_optimizer
from .run_folder import (BEST_KEYS, TrainingInterrupted, check_resumed_schedule, ensure_best_checkpoint, finite_checkpoint,
                         input_file_digests, resume_checkpoint)
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


#: Free space asked of the output folder at the start, in parameter sizes: ``best.pt`` (the weights, 1),
#: ``last.pt`` (weights and AdamW's two moments, 3) and the temporary copy of ``last.pt`` that replaces it (3).
CHECKPOINT_SPACE_IN_PARAMETERS = 7


class TrainingDiverged(UserError, RuntimeError):
    """A loss or a gradient became NaN or infinite; the message names the step, the term and the newest
    checkpoint whose weights are all finite."""


def in_interval(value: float, interval: str) -> bool:
    """Whether ``value`` is a finite number in ``interval``, written "[low, high)" (brackets: bound included)."""
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    above = low <= value if interval[0] == "[" else low < value
    below = value <= high if interval[-1] == "]" else value < high
    return math.isfinite(value) and above and below


def check_intervals(config: Mapping, intervals: Mapping[str, str]) -> None:
    """``ConfigError`` naming the first ``section.key`` whose value is not a finite number in its interval."""
    for name, interval in intervals.items():
        section, key = name.split(".")
        if not in_interval(config[section][key], interval):
            raise ConfigError(f"{name} must be a finite number in {interval}, got {config[section][key]!r}")


def check_training_config(config: Mapping) -> None:
    """``ConfigError`` naming the first training setting that cannot work (a count below its minimum, an
    unknown preset, AMP type or modality combination), before anything is built."""
    minimum = {"data.batch_size": 1, "data.eval_batch_size": 1, "data.workers": 0, "data.crop_size": 32,
               "data.eval_size": 32, "train.epochs": 1, "train.eval_every": 1, "train.log_every": 1,
               "train.grad_norm_every": 0, "train.max_steps_per_epoch": 0, "optim.warmup_epochs": 0,
               "model.embed_dim": 1, "train.seed": 0}
    for name, lowest in minimum.items():
        section, key = name.split(".")
        if config[section][key] < lowest:
            raise ConfigError(f"{name} must be >= {lowest}, got {config[section][key]}")
    if config["train"]["seed"] >= SEED_LIMIT:  # torch.manual_seed takes 64 bits; per-epoch seeds add to it
        raise ConfigError(f"train.seed must be < 2**32, got {config['train']['seed']}")
    check_intervals(config, {"optim.lr": "(0, inf)", "optim.weight_decay": "[0, inf)", "optim.warmup_ratio": "[0, 1]",
                             "optim.poly_power": "[0, inf)", "model.drop_path_rate": "[0, 1)",
                             "loss.ohem_thresh": "(0, 1)"})
    choices = {"model.preset": (config["model"]["preset"], MODEL_PRESETS),
               "train.amp_dtype": (config["train"]["amp_dtype"], ("bfloat16", "float16"))}
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{name} {value!r}: expected one of {', '.join(allowed)}")
    combinations = config["train"]["val_combinations"] or []
    unknown = [name for name in combinations if name not in COMBINATIONS]
    if unknown or not combinations:
        raise ConfigError(f"train.val_combinations {config['train']['val_combinations']}: expected some of "
                          f"{', '.join(COMBINATIONS)}")
    output, data = (Path(config[section][key]).resolve()
                    for section, key in (("train", "output_dir"), ("data", "root")))
    if output == data or data in output.parents:
        raise ConfigError(f"train.output_dir {config['train']['output_dir']}: inside the data set data.root "
                          f"{config['data']['root']}, whose folder holds the data set only; choose another folder")


#: train.seed is below this: seeds of later epochs and ranks (seed + 1000 * epoch + rank) stay in torch's 64 bits.
SEED_LIMIT = 2**32


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_loaders(data: Mapping, ctx: DistributedContext, seed: int) -> tuple[DataLoader, DataLoader]:
    """Train loader (random crops, shuffled, sharded under DDP) and val loader (eval size, sharded); the data
    set's classes (its meta.json) must be the model's, in the same order."""
    common = dict(root=data["root"], modalities=MODALITIES, conditions=data["conditions"], cases=data["cases"],
                  cache=data["cache"])
    train_set = DeliverDataset(split=data["train_split"], transform=TrainTransform(data["crop_size"]), **common)
    val_set = DeliverDataset(split=data["val_split"], transform=EvalTransform(data["eval_size"]), **common)
    difference = list_difference(train_set.classes, CLASS_NAMES, ("data set", "model"))
    if difference:
        raise DatasetError(f"{data['root']}: the data set's classes do not match the model's: {difference}")
    global_batch = data["batch_size"] * ctx.world_size
    if len(train_set) < global_batch:
        raise DatasetError(
            f"{train_set}: {len(train_set)} samples, fewer than one global batch "
            f"({data['batch_size']} x {ctx.world_size} processes)"
        )
    if ctx.is_distributed:
        train_sampler = DistributedSampler(train_set, ctx.world_size, ctx.rank, shuffle=True, seed=seed, drop_last=True)
    else:
        train_sampler = RandomSampler(train_set, generator=torch.Generator().manual_seed(seed))
    workers = data["workers"]
    if data["cache"] and workers > 0:
        # A cache lives in the process that decodes. Filled here, the workers forked each epoch share it; workers
        # kept across epochs would instead continue their augmentation streams, and a resumed run would not.
        train_set.preload()
        val_set.preload()
    train_loader = DataLoader(
        train_set, batch_size=data["batch_size"], sampler=train_sampler, num_workers=workers,
        collate_fn=collate, drop_last=True, pin_memory=ctx.device.type == "cuda",
    )
    val_loader = DataLoader(
        val_set, batch_size=data["eval_batch_size"], sampler=ShardSampler(val_set, ctx.rank, ctx.world_size),
        num_workers=workers, collate_fn=collate, pin_memory=ctx.device.type == "cuda",
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


def good_checkpoint(last_checkpoint: Path | None) -> str:
    """``last.pt`` or, failing that, its sibling ``best.pt`` when it loads with finite weights; else "none written yet"."""
    if last_checkpoint is None:
        return "none written yet"
    return finite_checkpoint([last_checkpoint, last_checkpoint.with_name("best.pt")])


def check_finite(terms: Mapping[str, torch.Tensor], step: int, last_checkpoint: Path | None) -> None:
    """Raise TrainingDiverged naming the first non-finite loss term, on every process when any has one
    (so no rank is left waiting in a collective)."""
    bad = next(((name, float(value.detach())) for name, value in terms.items()
                if not math.isfinite(float(value.detach()))), None)
    flag = torch.tensor([0.0 if bad is None else 1.0], device=next(iter(terms.values())).device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(flag)
    if flag.item() > 0:
        what = f"loss term {bad[0]!r} is {bad[1]}" if bad else "a loss term is not finite on another process"
        raise TrainingDiverged(f"step {step}: {what}; last good checkpoint: {good_checkpoint(last_checkpoint)}")


def nonfinite_gradient_terms(model: torch.nn.Module, step_function: StepFunction, batch: dict,
                             rng_states: tuple, autocast: dict) -> list[str]:
    """The loss terms whose gradient is not finite, from the step recomputed with the random state it had
    (``rng_states``: CPU and, on CUDA, device generator states taken before the step)."""
    torch.set_rng_state(rng_states[0])
    if rng_states[1] is not None:
        torch.cuda.set_rng_state(rng_states[1])
    parameters = [p for p in model.parameters() if p.requires_grad]
    with torch.autocast(**autocast):
        terms = step_function(model, batch)
    bad = []
    for name, value in terms.items():
        if name != "loss" and value.requires_grad:
            grads = torch.autograd.grad(value, parameters, retain_graph=True, allow_unused=True)
            if any(g is not None and not bool(torch.isfinite(g).all()) for g in grads):
                bad.append(name)
    return bad


def check_finite_gradients(model: torch.nn.Module, step_function: StepFunction, batch: dict, terms: Mapping,
                           rng_states: tuple, autocast: dict, step: int, last_checkpoint: Path | None) -> None:
    """Raise TrainingDiverged when a gradient (already reduced over processes) is not finite, before the
    optimiser applies it: the message names the step, the terms and parameter responsible, the loss values."""
    parameter = next((name for name, p in model.named_parameters()
                      if p.grad is not None and not bool(torch.isfinite(p.grad).all())), None)
    if parameter is None:
        return
    culprits = nonfinite_gradient_terms(model, step_function, batch, rng_states, autocast)
    losses = ", ".join(f"{name} {float(value.detach()):.4g}" for name, value in terms.items())
    source = f"of loss term(s) {', '.join(repr(name) for name in culprits)}" if culprits else "of the summed loss"
    raise TrainingDiverged(f"step {step}: the gradient {source} is not finite (first at parameter {parameter}) while "
                           f"the losses are finite ({losses}); the step was not applied; last good checkpoint: "
                           f"{good_checkpoint(last_checkpoint)}")


def _grad_norm(value: torch.Tensor, parameters: list[torch.nn.Parameter]) -> float:
    """L2 norm of d(value)/d(parameters), leaving the graph in place for the real backward pass."""
    if not value.requires_grad:
        return 0.0
    grads = torch.autograd.grad(value, parameters, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))


def _total_norm(parameters: list[torch.nn.Parameter]) -> float:
    """L2 norm of all gradients together (they are left as they are, a non-finite one included)."""
    norms = [torch.linalg.vector_norm(p.grad.detach().float()) for p in parameters if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


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

    Every step is checked before the optimiser applies it: the loss terms, then (unless the AMP grad
    scaler, which skips such steps itself, is on) the gradients; ``TrainingDiverged`` names the step, the
    term and ``last_checkpoint`` (or its ``best.pt``) when its weights are finite.

    ``timer`` (optional) accumulates the wall time of each part of a step: ``data`` (waiting for the
    batch and moving it to the device), ``forward`` (the step function: model passes and losses),
    ``backward``, ``optimizer`` and ``bookkeeping`` (finite checks, gradient-norm and scalar logging).
    """
    model.train()
    train_cfg = config["train"]
    amp = train_cfg["amp"] and ctx.device.type == "cuda"
    autocast = {"device_type": ctx.device.type, "dtype": getattr(torch, train_cfg["amp_dtype"]), "enabled": amp}
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
        rng_states = (torch.get_rng_state(), torch.cuda.get_rng_state(ctx.device) if ctx.device.type == "cuda" else None)
        with part("forward"), torch.autocast(**autocast):
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
            grad_norms["grad_norm_total"] = _total_norm(parameters)
            if not scaler.is_enabled() and not math.isfinite(grad_norms["grad_norm_total"]):  # AMP skips such steps
                check_finite_gradients(model, step_function, batch, terms, rng_states, autocast, step, last_checkpoint)
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
    *,
    allow_config_change: bool = False,
    command: str = "",
    command_line: str = "",
) -> dict:
    """Train ``segmentor`` (already on ``ctx.device``) with ``step_function``; returns the best validation
    metrics plus ``train_seconds`` (wall time of all epochs, over resumes) and ``steps`` (optimiser steps).

    Holds ``<output_dir>/.lock`` while it runs (a second run into the folder stops at once) and deletes the
    temporary files of writers killed there. Each epoch it logs, writes ``last.pt`` (resumable: optimiser,
    scheduler, scaler, epoch, best), then ``best.pt`` (weights and metadata) when the validation score
    improved, so a run killed at any instant and resumed (``resume``: "auto" or a path, checked by
    ``run_folder.resume_checkpoint``; ``allow_config_change`` for the keys safe to change) ends with the
    weights an uninterrupted run has. Ctrl-C raises ``TrainingInterrupted`` naming the saved epoch and
    ``command``, the command line that resumes; ``command_line`` (the one that ran, default this process's)
    goes into each checkpoint's metadata.
    """
    output_dir = Path(config["train"]["output_dir"])
    with FolderLock(output_dir) if ctx.is_main else nullcontext():
        if ctx.is_main:
            for path in remove_stale_temporaries(output_dir):
                print(f"removed {path}, left by a write that was killed", file=sys.stderr, flush=True)
        try:
            return _fit(config, ctx, segmentor, step_function, resume, description, allow_config_change, command,
                        command_line)
        except KeyboardInterrupt:  # before the epochs (loading, checks, the config written atomically)
            raise TrainingInterrupted(f"training stopped before its first epoch began; nothing partial was written in "
                                      f"{output_dir}; run it again with: {command or 'the same command'}") from None


def _fit(config: dict, ctx: DistributedContext, segmentor: torch.nn.Module, step_function: StepFunction,
         resume: str | None, description: str, allow_config_change: bool, command: str, command_line: str) -> dict:
    train_cfg, data_cfg, optim_cfg = config["train"], config["data"], config["optim"]
    output_dir = Path(train_cfg["output_dir"])
    seed = train_cfg["seed"]
    last_path, best_path = output_dir / "last.pt", output_dir / "best.pt"
    checkpoint, resume_path, changes = resume_checkpoint(output_dir, resume, config, allow_config_change, ctx.device)
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

    start_epoch, best, train_seconds, saved_epoch = 0, {"score": -1.0}, 0.0, None
    if checkpoint is not None:
        check_resumed_schedule(checkpoint, resume_path, steps_per_epoch, train_cfg["epochs"])
        load_model_state(segmentor, checkpoint, resume_path)
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint["scaler"]:  # empty when saved without the float16 grad scaler (on CPU): a fresh one then
            scaler.load_state_dict(checkpoint["scaler"])
        best = checkpoint["best"]
        start_epoch = checkpoint["epoch"] + 1
        if resume_path.resolve() == last_path.resolve():
            saved_epoch = checkpoint["epoch"]  # else a run continued into this folder: nothing in it yet
        train_seconds = float(checkpoint.get("train_seconds", 0.0))
        if ctx.is_main:
            ensure_best_checkpoint(best_path, checkpoint, resume_path)
            print(f"resumed from {resume_path} at epoch {start_epoch}"
                  + (f" with a changed config: {'; '.join(changes)}" if changes else ""))
    del checkpoint

    logger, input_digests = None, {}
    if ctx.is_main:
        input_digests = input_file_digests(config)
        parameter_bytes = sum(p.numel() * p.element_size() for p in segmentor.parameters())
        check_free_space(output_dir, CHECKPOINT_SPACE_IN_PARAMETERS * parameter_bytes, "best.pt and last.pt")
        logger = ScalarLogger(output_dir, tensorboard=train_cfg["tensorboard"],
                              first_steps={"train": scheduler.last_epoch, "epochs": start_epoch, "val": start_epoch})
        write_text_atomic(output_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        print(f"{description}: {segmentor.architecture} on {ctx.device} x{ctx.world_size}, "
              f"{len(train_loader.dataset)} train / {len(val_loader.dataset)} val frames, {steps_per_epoch} steps/epoch")

    metrics = dict(best)
    epoch = start_epoch
    try:
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
                state = save_epoch(segmentor, epoch, {
                    "meta": {**checkpoint_meta(config, metrics, segmentor.modalities, command_line),
                             "input_sha256": input_digests},  # in best.pt too: the run's teacher and data set
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(), "best": best, "train_seconds": train_seconds,
                    "steps_per_epoch": steps_per_epoch,
                }, stats, metrics if validated else None, logger, last_path)
                saved_epoch = epoch
                if best.get("epoch") == epoch:  # after last.pt: a resume rewrites it from there if cut short
                    save_checkpoint(best_path, {key: state[key] for key in BEST_KEYS})
                score_text = (f"val score {metrics['score']:.2f} (mean mIoU over "
                              f"{'/'.join(train_cfg['val_combinations'])}), " if validated else "")
                print(f"epoch {epoch}: loss {stats['loss']:.4f}, {stats['step_time_s']:.2f} s/step, {score_text}"
                      f"best {best['score']:.2f}", flush=True)
    except KeyboardInterrupt:
        if saved_epoch is not None:
            saved = (f"{last_path} holds epoch {saved_epoch} (nothing partial was written); resume with: "
                     f"{command or 'the same command and --resume auto'}")
        elif resume_path is not None:
            saved = (f"no epoch was completed in {output_dir}; {resume_path} still holds epoch {start_epoch - 1}: "
                     f"run the same command again (--resume {resume_path})")
        else:
            saved = ("no epoch was completed, so nothing was saved; start again with: "
                     f"{command or 'the same command and --resume auto'}")
        raise TrainingInterrupted(f"training stopped in epoch {epoch}; {saved}") from None
    finally:
        if logger is not None:
            logger.close()
    if ctx.is_distributed:  # leave together: rank 0 may still be writing; an early teardown aborts the others
        try:
            torch.distributed.barrier()
        except KeyboardInterrupt:  # not "before its first epoch" (fit): every epoch is done and saved
            raise TrainingInterrupted(f"training stopped after its last epoch ({last_path} holds it), while the "
                                      "processes waited for each other") from None
    return {**best, "train_seconds": train_seconds, "steps": scheduler.last_epoch}


def save_epoch(segmentor: torch.nn.Module, epoch: int, training_state: dict, stats: dict, scores: dict | None,
               logger: ScalarLogger, last_path: Path) -> dict:
    """Log epoch ``epoch``, then write ``last.pt`` (a resume drops log rows no ``last.pt`` follows); returns
    the state written. Weights that are not all finite are never written (``TrainingDiverged``)."""
    weights = segmentor.state_dict()
    nonfinite = [name for name, tensor in weights.items() if tensor.is_floating_point() and
                 not bool(torch.isfinite(tensor).all())]
    if nonfinite:
        raise TrainingDiverged(f"epoch {epoch}: weights {', '.join(nonfinite[:3])} are not finite; not saved; last "
                               f"good checkpoint: {good_checkpoint(last_path)}")
    state = {"model": weights, "architecture": segmentor.architecture, "epoch": epoch, **training_state}
    logger.log("epochs", epoch, stats)
    if scores is not None:
        logger.log("val", epoch, {k: v for k, v in scores.items() if k != "epoch"})
    logger.flush()
    save_checkpoint(last_path, state)
    return state
