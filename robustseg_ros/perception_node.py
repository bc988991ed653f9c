"""``perception_node``: run ``PerceptionNode`` (``robustseg_ros.node``) until shutdown.

Run: ``perception_node --ros-args --params-file config/perception.yaml -p checkpoint:=model.pt``
(``ros2 run robustseg_ros perception_node ...`` after a colcon build; docs/perception_node.md).

SIGINT and SIGTERM end it with exit code 0 and no traceback (``robustseg_ros.shutdown``): the executor
loop ends, the node stops its worker (nothing is published afterwards) and is destroyed, and only then
is the ROS context shut down. The node's own lifecycle *shutdown* transition ends the process the same way.
"""

from __future__ import annotations

import sys

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from robustseg_ros.node import CONFIGURE_ERRORS, PerceptionNode
from robustseg_ros.params import NODE_NAME
from robustseg_ros.shutdown import spin_until, stop_on_signals


def main(args: list[str] | None = None) -> int:
    """Console script ``perception_node``: run the node until SIGINT, SIGTERM or its lifecycle shutdown; 0 then,
    1 when it cannot start."""
    with stop_on_signals() as stop:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        try:
            try:
                node = PerceptionNode()
            except (*CONFIGURE_ERRORS, ParameterException) as error:
                rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {error}")
                return 1
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            try:
                spin_until(executor, lambda: stop.is_set() or node.finished or not rclpy.ok())
            finally:
                executor.remove_node(node)
                node.destroy_node()
                executor.shutdown()
            return 0
        finally:
            rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
