"""Entry points of the package's console scripts (setup.py): each imports its module only when it runs, so
Ctrl-C in the seconds rclpy and torch take to import is one line, not a traceback (``robustseg_core.cli.start``)."""

from robustseg_core.cli import entry_points

__getattr__ = entry_points({
    "perception_node": "robustseg_ros.perception_node",
    "record_synthetic": "robustseg_ros.bagtools.record_synthetic",
    "replay_bag": "robustseg_ros.bagtools.replay_bag",
    "evaluate_bag": "robustseg_ros.bagtools.evaluate_bag",
    "record_outputs": "robustseg_ros.bagtools.record_outputs",
})
