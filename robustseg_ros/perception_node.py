"""``perception_node``: run ``PerceptionNode`` (``robustseg_ros.node``) until shutdown.

Run: ``perception_node --ros-args --params-file config/perception.yaml -p checkpoint:=model.pt``
(``ros2 run robustseg_ros perception_node ...`` after a colcon build; docs/perception_node.md).
"""

from __future__ import annotations

import sys

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException

from robustseg_ros.node import PerceptionNode
from robustseg_ros.params import NODE_NAME


def main(args: list[str] | None = None) -> int:
    """Console script ``perception_node``: run the node until shutdown; 1 when it cannot start."""
    rclpy.init(args=args)
    try:
        node = PerceptionNode()
    except (FileNotFoundError, ValueError, RuntimeError, ParameterException) as error:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {error}")
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
