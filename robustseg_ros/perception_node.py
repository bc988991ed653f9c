"""``perception_node``: run ``PerceptionNode`` (``robustseg_ros.node``) until shutdown.

Run: ``perception_node --ros-args --params-file config/perception.yaml -p checkpoint:=model.pt``
(``ros2 run robustseg_ros perception_node ...`` after a colcon build; docs/perception_node.md).

A node that cannot start (a missing or malformed parameter file, an unknown parameter under
``strict_parameters``, an invalid value, a missing checkpoint) ends with one line on stderr,
``perception_node: error: ...``, and exit status 2 (parameters) or 1 (files, checkpoint).
"""

from __future__ import annotations

import sys

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException

from robustseg_core.cli import console_script
from robustseg_ros.node import PerceptionNode
from robustseg_ros.params import NODE_NAME, ParameterError, load_params_document

try:  # rclpy raises this for a parameter file rcl cannot parse; its home is an implementation module
    from rclpy._rclpy_pybind11 import RCLError
except ImportError:  # pragma: no cover - other rclpy builds
    RCLError = RuntimeError


def params_files(argv: list[str]) -> list[str]:
    """The ``--params-file`` arguments among the ROS arguments of ``argv``."""
    return [argv[index + 1] for index, item in enumerate(argv[:-1]) if item == "--params-file"]


def main(argv: list[str] | None = None) -> int:
    """Run the node until shutdown (``argv``: the command line without the program name); returns 0."""
    argv = sys.argv[1:] if argv is None else list(argv)
    for path in params_files(argv):
        load_params_document(path)  # one ParameterError naming a missing or malformed file, before rcl parses it
    try:
        rclpy.init(args=[NODE_NAME, *argv])
    except RCLError as error:
        raise ParameterError(" ".join(str(error).split())) from error
    try:
        node = PerceptionNode()
    except ParameterException as error:
        rclpy.try_shutdown()
        raise ParameterError(str(error)) from error
    except BaseException:
        rclpy.try_shutdown()
        raise
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


cli = console_script(main, "perception_node")


if __name__ == "__main__":
    sys.exit(cli())
