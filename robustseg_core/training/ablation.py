"""The paper's ablation on one data set: teacher, S, SR, SPC and SPCR, several seeds, mean ± std.

    python -m robustseg_core.training.ablation --out runs/ablation --seeds 0 1 2 --jobs 2 \\
        --teacher-config config/teacher_cpu.yaml --student-config config/student_cpu.yaml \\
        --teacher-set train.epochs=16 --student-set train.epochs=5

For every seed it trains a teacher, then the four student recipes from that teacher with equal
budgets (the student config's), evaluates each on the test split (15 combinations in both
conventions and the EMM / RMM / NM protocols) and writes ``ablation.json`` and ``ablation.md``.
Finished runs are skipped and interrupted ones resumed, so the command can simply be re-run.
``--set`` overrides apply to every run (e.g. ``train.epochs=4`` for a quick pass); those of sections
only the student has (``distill``, ``student``, ``teacher``) skip the teacher. ``--teacher-set`` and
``--student-set`` apply to one side only (e.g. different epoch budgets); they win over ``--set``.
``--allow-config-change`` lets an interrupted run resume with a changed budget (``train.epochs``);
finished runs are still skipped, so change a budget only for runs that are all unfinished (or use
a new ``--out``), or the table mixes budgets.
``--jobs N`` runs N trainings at a time, each in its own process. ``--teachers DIR`` reuses the
teachers of an earlier run, to compare student variants against the same teachers: the teacher rows
are then those teachers evaluated, none is trained. A student starts only from a finished teacher.
Overrides are checked before any run; ``data.root``, ``train.seed`` and ``train.output_dir`` come from
``--data-root``, ``--seeds`` and ``--out`` and cannot be overridden.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ..atomic import write_text_atomic
from ..cli import console_script, non_negative_int
from ..errors import UsageError, UserError
from ..evaluation.evaluate import main as evaluate
from ..models.checkpoint import load_checkpoint
from .config import merge, parse_overrides
from .train_student import DEFAULTS as STUDENT_DEFAULTS
from .train_student import RECIPES
from .train_student import main as train_student
from .train_teacher import DEFAULTS as TEACHER_DEFAULTS
from .train_teacher import main as train_teacher

METHODS = ("teacher", *RECIPES)
#: A run's test evaluation; a run that has it is finished and skipped.
RESULT = "eval_test.json"
#: Table columns: (header, function of an evaluate --json result).
COLUMNS = {
    "RDEL": lambda r: r["results"]["drop"]["combinations"]["RDEL"]["miou"],
    "mean of 15": lambda r: r["results"]["drop"]["mean_miou"],
    "EL": lambda r: r["results"]["drop"]["combinations"]["EL"]["miou"],
    "EMM mean": lambda r: r["robustness"]["EMM"]["mean"],
    "EMM E(0.2)": lambda r: r["robustness"]["EMM"]["E(0.2)"],
    "RMM r=0.5": lambda r: r["robustness"]["RMM"]["r=0.5"]["mean"],
    "NM low": lambda r: r["robustness"]["NM"]["low"],
    "NM mid": lambda r: r["robustness"]["NM"]["mid"],
    "NM high": lambda r: r["robustness"]["NM"]["high"],
}


#: Keys the ablation sets for each run itself, and the option that sets them.
ABLATION_KEYS = {"data.root": "--data-root", "train.seed": "--seeds", "train.output_dir": "--out"}


class AblationRunFailed(UserError, RuntimeError):
    """One (method, seed) run of a parallel ablation failed; the message names it and its log."""


class AblationUsageError(UsageError):
    """An override the ablation cannot apply, or a teacher that is not finished."""


def check_overrides(args: argparse.Namespace) -> None:
    """``AblationUsageError`` (or ``ConfigError``) for an override of a key the ablation sets itself, or one that
    neither side's config knows or whose value has the wrong type: before any run, not when the run starts."""
    for option, items, defaults in (("--set", args.set, STUDENT_DEFAULTS), ("--student-set", args.student_set,
                                    STUDENT_DEFAULTS), ("--teacher-set", args.teacher_set, TEACHER_DEFAULTS)):
        parsed = parse_overrides(items)
        for section, values in parsed.items():
            for key in values:
                if f"{section}.{key}" in ABLATION_KEYS:
                    raise AblationUsageError(f"{option} {section}.{key}: the ablation sets it for each run; use "
                                             f"{ABLATION_KEYS[f'{section}.{key}']}")
        merge(copy.deepcopy(defaults), parsed, defaults, option)


def check_teacher_finished(teacher: Path) -> None:
    """``AblationUsageError`` when the ``last.pt`` beside ``teacher`` (a best.pt) has not trained its epochs:
    its students would learn from a half-trained teacher, then refuse to resume once it has changed."""
    last = teacher.parent / "last.pt"
    if not last.exists():
        return
    checkpoint = load_checkpoint(last)
    epochs = checkpoint.get("meta", {}).get("config", {}).get("train", {}).get("epochs")
    if epochs is not None and checkpoint["epoch"] + 1 < epochs:
        raise AblationUsageError(f"teacher {teacher} is not finished ({checkpoint['epoch'] + 1} of {epochs} epochs in "
                                 f"{last}): finish it first (--methods teacher)")


def run_method(method: str, seed: int, out: Path, args: argparse.Namespace) -> dict:
    """Train (or resume, or skip) one method for one seed and return its test evaluation."""
    run_dir = out / f"{method}_seed{seed}"
    result_path = run_dir / RESULT
    if result_path.exists():
        return json.loads(result_path.read_text())
    common = [f"data.root={args.data_root}", f"train.seed={seed}", f"train.output_dir={run_dir}"]
    resume = ["--resume", "auto", *(["--allow-config-change"] if args.allow_config_change else [])]
    teacher = (args.teachers or out) / f"teacher_seed{seed}" / "best.pt"
    checkpoint = run_dir / "best.pt"
    if method == "teacher" and args.teachers:  # the given teacher, evaluated
        check_teacher_finished(teacher)
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = teacher
    elif method == "teacher":
        teacher_overrides = [item for item in args.set if item.partition(".")[0] in TEACHER_DEFAULTS]
        train_teacher(["--config", str(args.teacher_config), *resume, "--set", *common, *teacher_overrides,
                       *args.teacher_set])
    else:
        check_teacher_finished(teacher)
        train_student(["--config", str(args.student_config), *resume, "--set", *common, *args.set,
                       *args.student_set, f"student.recipe={method}", f"teacher.checkpoint={teacher}"])
    return evaluate(["--checkpoint", str(checkpoint), "--data-root", str(args.data_root), "--split", "test",
                     "--robustness", "--seed", str(seed), "--json", str(result_path),
                     "--markdown", str(run_dir / "eval_test.md")])


def run_parallel(args: argparse.Namespace, argv: list[str]) -> None:
    """Run every unfinished (method, seed) as its own process, ``args.jobs`` at a time, students after
    their teacher.

    Each process gets ``cpu_count // jobs`` threads (unless OMP_NUM_THREADS is set) and logs to
    ``<out>/<method>_seed<seed>.log``; the first failure stops the pool and names the run and its log.
    """
    jobs = [(method, seed) for method in args.methods for seed in args.seeds if method == "teacher"]
    jobs += [(method, seed) for seed in args.seeds for method in args.methods if method != "teacher"]
    pending = [(method, seed) for method, seed in jobs if not (args.out / f"{method}_seed{seed}" / RESULT).exists()]
    teacher_pending = {seed for method, seed in pending if method == "teacher" and not args.teachers}
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.jobs)))
    running: dict[tuple[str, int], tuple[subprocess.Popen, Path]] = {}
    args.out.mkdir(parents=True, exist_ok=True)
    while pending or running:
        for job, (process, log) in list(running.items()):
            if process.poll() is None:
                continue
            del running[job]
            if process.returncode != 0:
                for other, _ in running.values():
                    other.terminate()
                for other, _ in running.values():  # gone, with their folder locks, before the error returns
                    other.wait()
                raise AblationRunFailed(f"ablation run {job[0]} seed {job[1]} failed (exit {process.returncode}); "
                                        f"see {log}")
            if job[0] == "teacher":
                teacher_pending.discard(job[1])
        ready = [job for job in pending if job[0] == "teacher" or job[1] not in teacher_pending]
        while ready and len(running) < args.jobs:
            method, seed = job = ready.pop(0)
            pending.remove(job)
            log = args.out / f"{method}_seed{seed}.log"
            command = [sys.executable, "-m", __spec__.name, *argv, "--seeds", str(seed), "--methods", method, "--jobs", "1",
                       "--one-run"]
            with open(log, "a") as stream:
                running[job] = (subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, env=env), log)
            print(f"started {method} seed {seed} (log {log})", flush=True)
        time.sleep(1.0)


def ablation_table(results: dict[str, list[dict]]) -> str:
    """Markdown: one row per method, mean ± std over seeds of every column (mIoU %)."""
    header = "| method | seeds | " + " | ".join(COLUMNS) + " |"
    rows = [header, "|---|---:|" + "---:|" * len(COLUMNS)]
    for method, runs in results.items():
        cells = []
        for column in COLUMNS.values():
            values = [column(run) for run in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.2f} ± {spread:.2f}")
        rows.append(f"| {method} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


#: Columns whose per-seed differences to S are reported.
PAIRED_COLUMNS = ("RDEL", "mean of 15", "EL", "EMM mean")


def paired_differences(results: dict[str, list[dict]], seeds: list[int]) -> str:
    """Markdown: per-seed differences of each recipe to S (same seed, same teacher) on the headline
    columns, with their mean ± std: the comparison that removes the teacher's and the seed's share."""
    if "S" not in results:
        return ""
    rows = ["| difference | " + " | ".join(PAIRED_COLUMNS) + " |", "|---|" + "---:|" * len(PAIRED_COLUMNS)]
    for method in (m for m in RECIPES if m != "S" and m in results):
        cells = []
        for name in PAIRED_COLUMNS:
            column = COLUMNS[name]
            values = [column(run) - column(base) for run, base in zip(results[method], results["S"])]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            per_seed = ", ".join(f"{value:+.2f}" for value in values)
            cells.append(f"{statistics.mean(values):+.2f} ± {spread:.2f} ({per_seed})")
        rows.append(f"| {method} − S | " + " | ".join(cells) + " |")
    return f"Per-seed differences to S (seeds {', '.join(map(str, seeds))}), mIoU points:\n\n" + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Teacher / S / SR / SPC / SPCR ablation over seeds.")
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--data-root", type=Path, default=Path("data/sim128"))
    parser.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--teacher-config", type=Path, default=Path("config/teacher_cpu.yaml"))
    parser.add_argument("--student-config", type=Path, default=Path("config/student_cpu.yaml"))
    parser.add_argument("--set", nargs="*", action="extend", default=[], metavar="SECTION.KEY=VALUE",
                        help="overrides for every run, repeatable")
    parser.add_argument("--teacher-set", nargs="*", action="extend", default=[], metavar="SECTION.KEY=VALUE",
                        help="teacher-only overrides, repeatable")
    parser.add_argument("--student-set", nargs="*", action="extend", default=[], metavar="SECTION.KEY=VALUE",
                        help="student-only overrides, repeatable")
    parser.add_argument("--teachers", type=Path, default=None,
                        help="folder with teacher_seed<N>/best.pt of an earlier run (default: --out)")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="let interrupted runs resume with the keys that may change (e.g. a longer train.epochs)")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel, each its own process (students wait for their teacher)")
    parser.add_argument("--one-run", action="store_true", help=argparse.SUPPRESS)  # a --jobs child: no summary files
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    check_overrides(args)
    if args.jobs > 1:
        run_parallel(args, argv)
    results: dict[str, list[dict]] = {method: [] for method in args.methods}
    for seed in args.seeds:
        for method in args.methods:
            results[method].append(run_method(method, seed, args.out, args))
    if args.one_run:  # the parent writes ablation.md and ablation.json once every run has finished
        return results
    table = ablation_table(results)
    differences = paired_differences(results, args.seeds)
    write_text_atomic(args.out / "ablation.md", f"Test split of {args.data_root}, seeds {args.seeds}; mIoU %, mean ± std.\n\n"
                                                f"{table}\n{differences}")
    write_text_atomic(args.out / "ablation.json", json.dumps(
        {method: [{name: column(run) for name, column in COLUMNS.items()} for run in runs] for method, runs in results.items()},
        indent=2) + "\n")
    print(table)
    print(differences)
    return results


if __name__ == "__main__":
    sys.exit(console_script(main, "ablation")())
