"""perception_node as a real process: SIGINT and SIGTERM while it segments end it with exit code 0, no traceback,
and nothing published after the ROS context shut down; ten start/stop cycles, then one ended by the lifecycle
shutdown transition.

Importing torch takes 5-15 s on the 2-core dev machine, so the ten cycles' processes are forked from one that
has imported torch and robustseg_core, but not rclpy (rclpy imported before a fork crashes the child at exit):
each imports rclpy and the node itself and runs ``perception_node.main`` to its exit status, with its own ROS
context, signals and interpreter shutdown. The last cycle starts ``python -m robustseg_ros.perception_node``
from scratch.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")

from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from test_perception_node import PUBLISH_ORDER, SENSOR_TOPICS, SENSOR_TYPES, wait_for  # noqa: E402
from test_pipeline import SIZE, drive_messages, drive_parameters, make_tiny_checkpoint  # noqa: E402

from robustseg_core.sim.drive import Drive, DriveConfig  # noqa: E402
from robustseg_ros.params import params_file_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CYCLES = 10
#: Messages that must never appear in the node's output.
FORBIDDEN = ("Traceback", "context is invalid", "RCLError", "frame failed")


class SensorStream:
    """Publishes generated drive frames at 10 Hz (stamped with the wall clock) and counts segmentations."""

    def __init__(self, context) -> None:
        drive = Drive(5, DriveConfig(width=SIZE[0], height=SIZE[1]))
        self.frames = [drive.frame(index) for index in range(1, 5)]
        self.rig = drive_parameters(drive)
        self.node = Node("sensors", context=context)
        self.publishers = {sensor: self.node.create_publisher(SENSOR_TYPES[sensor], topic, qos_profile_sensor_data)
                           for sensor, topic in SENSOR_TOPICS.items()}
        self.segmentations = 0
        self.node.create_subscription(Image, "/perception_node/segmentation", self._count,
                                      QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self.executor.spin, daemon=True),
                         threading.Thread(target=self._publish, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _count(self, _msg) -> None:
        self.segmentations += 1

    def _publish(self) -> None:
        index = 0
        while not self._stop.wait(0.1):
            messages = drive_messages(self.frames[index % len(self.frames)], time.time())
            for sensor in PUBLISH_ORDER:
                self.publishers[sensor].publish(messages[sensor])
            index += 1

    def close(self) -> None:
        self._stop.set()
        self.executor.shutdown()
        for thread in self._threads:
            thread.join(5.0)
        self.node.destroy_node()


@pytest.fixture
def stream(ros_domain):
    context = rclpy.Context()
    context.init(domain_id=ros_domain)
    running = SensorStream(context)
    yield running
    running.close()
    context.try_shutdown()


#: Reads "<log file> <params file>" lines; forks a child per line that runs perception_node with its output in the
#: log file, and prints "pid <pid>", then "exit <status>" once the child has ended.
FORK_SERVER = """
import os, sys
import robustseg_core.inference, robustseg_core.sensors
assert "rclpy" not in sys.modules
print("ready", flush=True)
for line in sys.stdin:
    log, params = line.split()
    pid = os.fork()
    if pid == 0:
        descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(descriptor, 1)
        os.dup2(descriptor, 2)
        import robustseg_ros.perception_node
        sys.exit(robustseg_ros.perception_node.cli(["--ros-args", "--params-file", params]))
    print("pid", pid, flush=True)
    print("exit", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


def node_environment() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


class ForkedNodes:
    """Starts perception_node processes forked from one that has imported its modules."""

    def __init__(self) -> None:
        self.server = subprocess.Popen([sys.executable, "-c", FORK_SERVER], cwd=ROOT, env=node_environment(),
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.server.stdout.readline().strip() == "ready"

    def start(self, log: Path, params_file: Path) -> int:
        self.server.stdin.write(f"{log} {params_file}\n")
        self.server.stdin.flush()
        kind, pid = self.server.stdout.readline().split()
        assert kind == "pid"
        return int(pid)

    def exit_status(self) -> int:
        kind, status = self.server.stdout.readline().split()
        assert kind == "exit"
        return int(status)

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(20.0)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until_segmenting(stream: SensorStream, running) -> None:
    before = stream.segmentations
    wait_for(lambda: stream.segmentations > before or not running(), 90.0, "the node's first frame")
    assert running(), "the node ended before its first frame"


def assert_clean(status: int, output: str, what: str) -> None:
    assert status == 0, f"{what}: exit code {status}:\n{output}"
    found = [text for text in FORBIDDEN if text in output]
    assert not found, f"{what}: {found} in the node's output:\n{output}"


def test_sigint_and_sigterm_end_the_node_cleanly_ten_times(stream, tmp_path):
    params = {**stream.rig, "checkpoint": make_tiny_checkpoint(tmp_path / "tiny.pt"), "device": "cpu",
              "warmup_iterations": 0, "warmup_width": SIZE[0], "warmup_height": SIZE[1]}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(params_file_text(params, "test_shutdown"))
    shuffle = random.Random(0)
    nodes = ForkedNodes()
    try:
        for cycle in range(CYCLES):
            number = (signal.SIGINT, signal.SIGTERM)[cycle % 2]
            log = tmp_path / f"cycle{cycle}.log"
            pid = nodes.start(log, params_file)
            wait_until_segmenting(stream, lambda: alive(pid))
            time.sleep(shuffle.uniform(0.0, 0.3))  # anywhere in a frame: the worker may be segmenting or publishing
            os.kill(pid, number)
            assert_clean(nodes.exit_status(), log.read_text(), f"cycle {cycle + 1} ({signal.Signals(number).name})")
    finally:
        nodes.close()

    process = subprocess.Popen([sys.executable, "-m", "robustseg_ros.perception_node", "--ros-args", "--params-file",
                                str(params_file)], cwd=ROOT, env=node_environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_segmenting(stream, lambda: process.poll() is None)
        client = stream.node.create_client(ChangeState, "/perception_node/change_state")
        assert client.wait_for_service(timeout_sec=10.0)
        future = client.call_async(ChangeState.Request(transition=Transition(label="shutdown")))
        wait_for(future.done, 10.0, "the shutdown transition")
        assert future.result().success
        output, _ = process.communicate(timeout=20.0)
    finally:
        process.kill()
    assert_clean(process.returncode, output, "lifecycle shutdown")
