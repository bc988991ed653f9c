"""Start robustseg_ros perception_node with a parameter file (needs a ROS 2 install with launch_ros).

    ros2 launch robustseg_ros perception.launch.py checkpoint:=/path/to/model.pt device:=cuda namespace:=front

Arguments: params_file (default: the package's config/perception.yaml), checkpoint and device (empty:
keep the parameter file's value), namespace, use_sim_time (true when replaying a bag with --clock),
strict_parameters (default true: the node refuses to start on a parameter it does not have, a typo), managed
(true: a launch_ros LifecycleNode with autostart false, left unconfigured for a lifecycle manager or
`ros2 lifecycle set /perception_node configure` and `activate`).
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

PACKAGE = "robustseg_ros"


def _is_true(context, name: str) -> bool:
    return LaunchConfiguration(name).perform(context).lower() in ("true", "1")


def _perception_node(context):
    """The node, with checkpoint and device overriding the parameter file only when given, use_sim_time and
    strict_parameters always; managed: a LifecycleNode that waits unconfigured."""
    overrides = {name: _is_true(context, name) for name in ("use_sim_time", "strict_parameters")}
    for name in ("checkpoint", "device"):
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    managed = _is_true(context, "managed")
    if managed:
        overrides["autostart"] = False
    node_action = LifecycleNode if managed else Node
    return [node_action(
        package=PACKAGE,
        executable="perception_node",
        name="perception_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), overrides],
        output="screen",
        emulate_tty=True,
    )]


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "perception.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="Parameter file of perception_node."),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="RobustSeg checkpoint (.pt); empty: the parameter file's value "
                                          "(itself empty: the student shipped in the package)."),
        DeclareLaunchArgument("device", default_value="",
                              description="auto, cpu, cuda or cuda:N; empty: the parameter file's value."),
        DeclareLaunchArgument("namespace", default_value="",
                              description="Namespace of the node; relative input topics resolve in it."),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Follow /clock (bag replay with `ros2 bag play --clock`)."),
        DeclareLaunchArgument("strict_parameters", default_value="true",
                              description="Refuse to start on a parameter the node does not have (a typo in the "
                                          "parameter file or an override); false: warn and start."),
        DeclareLaunchArgument("managed", default_value="false",
                              description="Start as a managed lifecycle node left unconfigured (autostart false)."),
        OpaqueFunction(function=_perception_node),
    ])
