"""``perception_node``: run ``PerceptionNode`` (``robustseg_ros.node``) until shutdown.

Run: ``perception_node --ros-args --params-file config/perception.yaml -p checkpoint:=model.pt``
(``ros2 run robustseg_ros perception_node ...`` after a colcon build; docs/perception_node.md).

Shutdown is this script's, not rclpy's: SIGINT and SIGTERM only set a flag; the executor loop then ends,
the node stops its worker (nothing is published afterwards), is destroyed, and only then is the ROS
context shut down. The exit code is 0, without a traceback. The node's own lifecycle *shutdown*
transition ends the process the same way.
"""

from __future__ import annotations

import signal
import sys
import threading

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from robustseg_ros.node import CONFIGURE_ERRORS, PerceptionNode
from robustseg_ros.params import NODE_NAME

#: Longest time (s) between a signal and the executor loop noticing it.
SPIN_PERIOD_S = 0.1


def main(args: list[str] | None = None) -> int:
    """Console script ``perception_node``: run the node until SIGINT, SIGTERM or its lifecycle shutdown; 0 then,
    1 when it cannot start."""
    stop = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop.set()) for number in (signal.SIGINT, signal.SIGTERM)}
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
            while not stop.is_set() and not node.finished and rclpy.ok():
                executor.spin_once(timeout_sec=SPIN_PERIOD_S)
        finally:
            executor.remove_node(node)
            node.destroy_node()
            executor.shutdown()
        return 0
    finally:
        rclpy.try_shutdown()
        for number, handler in previous.items():
            signal.signal(number, handler)


if __name__ == "__main__":
    sys.exit(main())
