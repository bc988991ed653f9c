"""``perception_node``: run ``PerceptionNode`` (``robustseg_ros.node``) until shutdown.

Run: ``perception_node --ros-args --params-file config/perception.yaml -p checkpoint:=model.pt``
(``ros2 run robustseg_ros perception_node ...`` after a colcon build; docs/perception_node.md).

A node that cannot start (a missing or malformed parameter file, an unknown parameter under
``strict_parameters``, an invalid value, a missing checkpoint or a model that does not fit, a backend
that is not installed) ends with one line on stderr, ``perception_node: error: ...``, and exit status 2
(parameters) or 1 (files, checkpoint, backend).

SIGINT and SIGTERM end it with exit code 0 and no traceback (``robustseg_ros.shutdown``): the executor
loop ends, the node stops its worker (nothing is published afterwards) and is destroyed, and only then
is the ROS context shut down. The node's own lifecycle *shutdown* transition ends the process the same way.
"""

from __future__ import annotations

import argparse
import sys
import time

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from robustseg_core.cli import console_script, split_ros_args
from robustseg_ros.node import PerceptionNode
from robustseg_ros.params import NODE_NAME, ParameterError, load_params_document
from robustseg_ros.shutdown import spin_until, stop_on_signals

try:  # rclpy raises this for a parameter file rcl cannot parse; its home is an implementation module
    from rclpy._rclpy_pybind11 import RCLError
except ImportError:  # pragma: no cover - other rclpy builds
    RCLError = RuntimeError

#: How long (s) the node keeps spinning after its lifecycle shutdown, for the transition's response to arrive.
SHUTDOWN_GRACE_S = 0.2


def params_files(argv: list[str]) -> list[str]:
    """The ``--params-file`` arguments among the ROS arguments of ``argv``."""
    return [argv[index + 1] for index, item in enumerate(argv[:-1]) if item == "--params-file"]


def build_parser() -> argparse.ArgumentParser:
    """The node's own command line: nothing but ``--help``; everything else is ROS arguments."""
    return argparse.ArgumentParser(
        prog="perception_node", usage="perception_node [-h] [--ros-args [-p NAME:=VALUE] [--params-file FILE] ...]",
        description="The robustseg perception node: camera, depth, LiDAR and event topics in, segmentation, sensor "
                    "health and /diagnostics out.",
        epilog="Parameters: config/perception.yaml (every one, with its default and meaning) and "
               "docs/perception_node.md; ros2 launch robustseg_ros perception.launch.py takes the same.")


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGINT, SIGTERM or its lifecycle shutdown (``argv``: the command line without the
    program name); returns 0. A node that cannot start raises the error that stopped it."""
    own, ros_args = split_ros_args(argv)
    build_parser().parse_args(own)  # --help, or an argument that belongs after --ros-args: exit 2 naming it
    argv = ros_args
    for path in params_files(argv):
        load_params_document(path)  # one ParameterError naming a missing or malformed file, before rcl parses it
    with stop_on_signals() as stop:
        try:
            rclpy.init(args=[NODE_NAME, *argv], signal_handler_options=SignalHandlerOptions.NO)
        except RCLError as error:
            raise ParameterError(" ".join(str(error).split())) from error
        try:
            try:
                node = PerceptionNode(interrupted=stop.is_set)
            except ParameterException as error:
                raise ParameterError(str(error)) from error
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            try:
                spin_until(executor, lambda: stop.is_set() or node.finished or not rclpy.ok())
                if node.finished:  # the shutdown transition's response is on its way: let DDS deliver it
                    deadline = time.monotonic() + SHUTDOWN_GRACE_S
                    spin_until(executor, lambda: stop.is_set() or time.monotonic() > deadline or not rclpy.ok())
            finally:
                executor.remove_node(node)
                node.destroy_node()
                executor.shutdown()
            return 0
        finally:
            rclpy.try_shutdown()


cli = console_script(main, "perception_node")


if __name__ == "__main__":
    sys.exit(cli())
