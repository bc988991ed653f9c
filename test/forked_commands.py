"""Run console scripts as real processes, fast: a server process imports every command module once, then
forks one child per run, so each run is its own process (exit status, stdout and stderr, environment,
working folder, resource limits) without paying for the imports of torch and rclpy every time.

A child runs ``sys.exit(module.cli(argv))`` exactly as the console script does; an exception escaping it
prints its traceback and exits 1, as the interpreter would. The server forks from a fresh interpreter that
has imported but never run anything (no threads), which keeps ``fork`` safe.

    with CommandRunner() as runner:
        result = runner.run("robustseg_core.sim.generate", ["--out", "/tmp/x", ...])
        result.status, result.stdout, result.stderr
        pid = runner.start(...)   # signal it: os.kill(pid, signal.SIGINT)
        result = runner.result()

``stop_after_train_step=N`` makes a training run stop itself (SIGSTOP) right after it logged train step N,
so a test can signal it at a known point of its run instead of racing it.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

#: Every module with a console script (setup.py).
COMMAND_MODULES = (
    "robustseg_core.sim.generate", "robustseg_core.training.pretrain_encoder", "robustseg_core.training.train_teacher",
    "robustseg_core.evaluation.evaluate", "robustseg_core.training.train_student", "robustseg_core.training.export",
    "robustseg_ros.perception_node", "robustseg_ros.bagtools.record_synthetic", "robustseg_ros.bagtools.replay_bag",
    "robustseg_ros.bagtools.evaluate_bag",
)


@dataclass(frozen=True)
class CommandResult:
    status: int  #: exit status; -N when killed by signal N
    stdout: str
    stderr: str


def _stop_after_train_step(stop_step: int) -> None:
    """In the child: stop the process (SIGSTOP) once the training logger has written train step ``stop_step``."""
    from robustseg_core.training.logger import ScalarLogger

    log = ScalarLogger.log

    def log_then_stop(self, stream: str, step: int, values) -> None:
        log(self, stream, step, values)
        if stream == "train" and step == stop_step:
            os.kill(os.getpid(), signal.SIGSTOP)

    ScalarLogger.log = log_then_stop


def _child(request: dict, out_path: str, err_path: str) -> None:
    """In the forked child: set up the run as requested and exit with the command's status."""
    status = 1
    try:
        for stream, path in ((1, out_path), (2, err_path)):
            handle = os.open(path, os.O_WRONLY | os.O_TRUNC)
            os.dup2(handle, stream)
            os.close(handle)
        # Ctrl-C raises KeyboardInterrupt as in a console script started from a shell, even when this test run
        # inherited SIGINT ignored (started as a background job, where Python leaves it ignored)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.update(request.get("env") or {})
        if request.get("cwd"):
            os.chdir(request["cwd"])
        if request.get("file_size_limit"):
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
            limit = request["file_size_limit"]
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        if request.get("stop_after_train_step") is not None:
            _stop_after_train_step(request["stop_after_train_step"])
        sys.argv = [request["module"].rsplit(".", 1)[-1], *request["argv"]]
        try:
            status = importlib.import_module(request["module"]).cli(request["argv"])
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except BaseException:  # noqa: BLE001 - the interpreter's own behaviour for an uncaught exception
            traceback.print_exc()
            status = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def serve() -> None:
    """The server loop: one JSON request per stdin line, one JSON result per stdout line."""
    for name in COMMAND_MODULES:
        importlib.import_module(name)
    reply = os.fdopen(os.dup(1), "w")  # the protocol's channel; stray prints of the server go to stderr
    os.dup2(2, 1)
    print("ready", file=reply, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        with tempfile.TemporaryDirectory() as folder:
            out_path, err_path = os.path.join(folder, "out"), os.path.join(folder, "err")
            for path in (out_path, err_path):
                Path(path).touch()
            pid = os.fork()
            if pid == 0:
                _child(request, out_path, err_path)
            print(json.dumps({"pid": pid}), file=reply, flush=True)
            _, wait_status = os.waitpid(pid, 0)
            status = os.waitstatus_to_exitcode(wait_status)
            result = {"status": status, "stdout": Path(out_path).read_text(errors="replace"),
                      "stderr": Path(err_path).read_text(errors="replace")}
        print(json.dumps(result), file=reply, flush=True)


class CommandRunner:
    """A server process (context manager); ``run(module, argv, env=, cwd=, file_size_limit=)`` -> CommandResult,
    or ``start(...)`` -> process id, then ``result()``."""

    def __init__(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen([sys.executable, "-c", "import forked_commands; forked_commands.serve()"],
                                        cwd=Path(__file__).resolve().parent, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the command server did not start")

    def __enter__(self) -> CommandRunner:
        return self

    def __exit__(self, *exc_info) -> None:
        """End the server; a run still going (a test that failed midway) ends with it (its process group)."""
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def start(self, module: str, argv: list[str], *, env: dict | None = None, cwd: str | None = None,
              file_size_limit: int | None = None, stop_after_train_step: int | None = None) -> int:
        """Start a run; returns its process id (to signal it). Collect it with ``result()``."""
        request = {"module": module, "argv": [str(item) for item in argv], "env": env, "cwd": cwd,
                   "file_size_limit": file_size_limit, "stop_after_train_step": stop_after_train_step}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())["pid"]

    def result(self) -> CommandResult:
        """Wait for the run started last and return how it ended."""
        return CommandResult(**json.loads(self.process.stdout.readline()))

    def run(self, module: str, argv: list[str], **options) -> CommandResult:
        self.start(module, argv, **options)
        return self.result()
