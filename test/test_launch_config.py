"""The launch file's arguments, config/perception.yaml and the node's declared parameters agree."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from rcl_interfaces.msg import ParameterType  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from robustseg_ros.node import declare_perception_parameters  # noqa: E402
from robustseg_ros.params import NODE_NAME, PARAMETERS, read_params_file  # noqa: E402
from robustseg_ros.node import PerceptionNode  # noqa: E402
from robustseg_ros.params import ParameterError  # noqa: E402
from robustseg_ros.perception_node import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "perception.yaml"
LAUNCH = ROOT / "launch" / "perception.launch.py"
DOCS = ROOT / "docs" / "perception_node.md"
YAML_NODE_KEY = f"/**/{NODE_NAME}"
LAUNCH_ARGUMENTS = {"params_file", "checkpoint", "device", "namespace", "use_sim_time", "strict_parameters", "managed"}


def yaml_parameters(path: Path = CONFIG) -> dict:
    """The file's dotted parameter values (lists as tuples), after checking it has one entry, for any namespace."""
    document = yaml.safe_load(path.read_text())
    assert list(document) == [YAML_NODE_KEY], "one node entry, matching the node in any namespace"
    return read_params_file(path)


def yaml_comments(path: Path = CONFIG) -> dict[str, str]:
    """Dotted parameter name -> the comment lines just above it in the file, joined."""
    comments, sections, found = [], [], {}
    for line in path.read_text().splitlines():
        text = line.strip()
        if text.startswith("#"):
            comments.append(text[1:].strip())
            continue
        key, colon, value = text.partition(":")
        if not colon:
            comments = []
            continue
        indent = len(line) - len(line.lstrip())
        sections = [(depth, name) for depth, name in sections if depth < indent]
        if value.strip():
            names = [name for _, name in sections if name not in (YAML_NODE_KEY, "ros__parameters")]
            found[".".join([*names, key])] = " ".join(comments)
        else:
            sections.append((indent, key))
        comments = []
    return found


def test_yaml_comments_are_the_parameter_descriptions():
    comments = yaml_comments()
    for spec in PARAMETERS:
        assert " ".join(comments.get(spec.name, "").split()) == " ".join(spec.description.split()), spec.name


def declared_with_params_file(path: Path, ros_domain: int, namespace: str = "") -> tuple[dict, Node, rclpy.Context]:
    context = rclpy.Context()
    context.init(args=["--ros-args", "--params-file", str(path)], domain_id=ros_domain)
    node = Node(NODE_NAME, namespace=namespace, context=context)
    return declare_perception_parameters(node), node, context


def test_yaml_keys_are_the_declared_parameters_with_their_types(ros_domain):
    from_yaml = yaml_parameters()
    declared, node, context = declared_with_params_file(CONFIG, ros_domain)
    try:
        assert set(from_yaml) == set(declared), (f"only in the yaml: {sorted(set(from_yaml) - set(declared))}; "
                                                 f"only declared: {sorted(set(declared) - set(from_yaml))}")
        for name, value in from_yaml.items():
            assert (tuple(declared[name]) if isinstance(value, tuple) else declared[name]) == value, name
        for spec in PARAMETERS:
            descriptor = node.describe_parameter(spec.name)
            assert descriptor.description == spec.description
            assert not descriptor.read_only, "the node refuses a parameter that is not live unless unconfigured"
            assert descriptor.type != ParameterType.PARAMETER_NOT_SET
    finally:
        node.destroy_node()
        context.try_shutdown()
    lines = [line.strip() for line in CONFIG.read_text().splitlines() if line.strip()]
    for previous, line in zip(lines, lines[1:]):
        if not line.startswith("#") and not line.endswith(":"):
            assert previous.startswith("#"), f"no comment above {line!r}"


@pytest.mark.parametrize("namespace", ["", "front_camera"])
def test_params_file_applies_in_any_namespace(tmp_path, ros_domain, namespace):
    edited = CONFIG.read_text().replace('device: "auto"', 'device: "cpu"').replace("window_s: 0.1", "window_s: 0.05")
    path = tmp_path / "perception.yaml"
    path.write_text(edited)
    declared, node, context = declared_with_params_file(path, ros_domain, namespace)
    try:
        assert declared["device"] == "cpu" and declared["events.window_s"] == 0.05
    finally:
        node.destroy_node()
        context.try_shutdown()


def launch_calls() -> dict:
    """Literal arguments of the launch file's DeclareLaunchArgument and node_action (Node or LifecycleNode) calls
    (module-level string constants resolved; other expressions kept as None)."""
    tree = ast.parse(LAUNCH.read_text())
    constants = {target.id: statement.value.value for statement in tree.body if isinstance(statement, ast.Assign)
                 for target in statement.targets
                 if isinstance(target, ast.Name) and isinstance(statement.value, ast.Constant)}

    def value(expression):
        if isinstance(expression, ast.Name):
            return constants.get(expression.id)
        return expression.value if isinstance(expression, ast.Constant) else None

    calls: dict = {"DeclareLaunchArgument": [], "node_action": []}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in calls:
            calls[node.func.id].append(([value(arg) for arg in node.args],
                                        {keyword.arg: value(keyword.value) for keyword in node.keywords}))
    return calls


def test_launch_arguments_match_the_node():
    calls = launch_calls()
    arguments = {positional[0] for positional, _ in calls["DeclareLaunchArgument"]}
    assert arguments == LAUNCH_ARGUMENTS
    assert {"checkpoint", "device"} <= {spec.name for spec in PARAMETERS}, "overridable arguments are parameters"
    [(_, node)] = calls["node_action"]
    assert node["package"] == "robustseg_ros"
    assert node["executable"] == "perception_node" and node["name"] == NODE_NAME
    text = LAUNCH.read_text()
    assert "node_action = LifecycleNode if managed else Node" in text and 'overrides["autostart"] = False' in text
    assert '"config", "perception.yaml"' in text, "default params_file: the package's config/perception.yaml"


def test_launch_description_loads_where_launch_ros_is_installed():
    if importlib.util.find_spec("launch_ros") is None or importlib.util.find_spec("launch") is None:
        pytest.skip("launch / launch_ros are not installed (they come with a full ROS 2 install, not from pip)")
    from launch import LaunchDescription

    spec = importlib.util.spec_from_file_location("perception_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        description = module.generate_launch_description()
    except LookupError as error:  # ament_index: the package is not installed in a ROS workspace
        pytest.skip(f"robustseg_ros is not installed in an ament index: {error}")
    assert isinstance(description, LaunchDescription)
    names = {argument.name for argument in description.get_launch_arguments()}
    assert names == LAUNCH_ARGUMENTS


def test_docs_describe_every_parameter_and_output():
    text = DOCS.read_text()
    missing = [spec.name for spec in PARAMETERS if f"`{spec.name}`" not in text]
    assert not missing, f"docs/perception_node.md lacks {missing}"
    for topic in ("~/segmentation", "~/segmentation_color", "~/confidence", "~/overlay", "~/class_names",
                  "~/label_info", "~/latency_ms", "~/sensor_status", "/diagnostics", "use_sim_time"):
        assert topic in text, topic


def test_node_without_a_checkpoint_exits_with_a_clear_error(ros_domain, tmp_path, capfd):
    missing = tmp_path / "missing.pt"
    code = cli(["--ros-args", "-p", f"checkpoint:={missing}", "-p", "warmup_iterations:=0"])
    assert code == 1
    [line] = capfd.readouterr().err.splitlines()
    assert line.startswith("perception_node: error: checkpoint") and "checkpoint:=" in line


def test_unknown_parameters_are_named_and_refused_when_strict(ros_domain, tmp_path, capfd):
    params = tmp_path / "params.yaml"
    params.write_text(f"{YAML_NODE_KEY}:\n  ros__parameters:\n    camera:\n      topik: /cam\n")
    context = rclpy.Context()
    context.init(args=["--ros-args", "--params-file", str(params), "-p", "warmup_iterations:=0", "-p", "fp17:=true"],
                 domain_id=ros_domain)
    try:
        node = PerceptionNode(context=context)  # a typo is named, and the node starts
        node.destroy_node()
        assert ("unknown parameter(s) camera.topik (did you mean camera.topic?), fp17 (did you mean fp16?): ignored"
                in capfd.readouterr().err)
        with pytest.raises(ParameterError, match=r"unknown parameter\(s\) camera.topik .*strict_parameters is true"):
            PerceptionNode(context=context, parameter_overrides=[Parameter("strict_parameters", value=True)])
    finally:
        context.try_shutdown()


def test_recorded_rig_params_file_sets_every_parameter(ros_domain, tmp_path):
    """record_synthetic's perception_params.yaml is a complete parameter file carrying the drive's rig."""
    from robustseg_ros.bagtools.record_synthetic import PARAMS_FILE
    from robustseg_ros.bagtools.record_synthetic import cli as record_synthetic

    bag = tmp_path / "bag"
    assert record_synthetic([str(bag), "--duration", "0.3", "--width", "32", "--height", "32"]) == 0
    rig = json.loads((bag / "fault_timeline.json").read_text())["rig_parameters"]
    declared, node, context = declared_with_params_file(bag / PARAMS_FILE, ros_domain)
    try:
        assert set(yaml_parameters(bag / PARAMS_FILE)) == set(yaml_parameters())
        assert declared["camera.height_m"] == pytest.approx(rig["camera.height_m"])
        assert list(declared["lidar.transform"]) == pytest.approx(rig["lidar.transform"])
    finally:
        node.destroy_node()
        context.shutdown()
