"""ament_python set-up for robustseg_ros (colcon and pip both use it)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "robustseg_ros"

ROS_WHEELS = [
    # ROS 2 from the package index, for machines without a ROS install.
    "ros-rclpy",
    "ros-sensor-msgs",
    "ros-std-msgs",
    "ros-diagnostic-msgs",
    "ros-lifecycle-msgs",
    "ros-rcl-lifecycle",
    "ros-rmw-fastrtps-cpp",
]
ONNX = ["onnx>=1.15", "onnxruntime>=1.17"]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["robustseg_core", "robustseg_core.*", "robustseg_ros", "robustseg_ros.*"]),
    package_data={"robustseg_ros": ["models/*.pt"], "robustseg_core": ["models/weights/*.pth"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.json")),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "pyyaml>=6",
        "rosbags>=0.10",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        "ros": ROS_WHEELS,
        # Optional inference backends (docs/perception_node.md, "Backends").
        "onnx": ONNX,
        "openvino": ["onnx>=1.15", "openvino>=2024.0"],
        "tensorrt": ["onnx>=1.15", "onnxruntime-gpu>=1.17", "tensorrt>=10"],
        # What the test suite runs (OpenVINO and TensorRT tests skip without their extras).
        "test": ["pytest>=7", "tensorboard>=2.10", *ONNX],  # tensorboard: the logger's resume test
    },
    zip_safe=True,
    maintainer="robustseg_ros developers",
    maintainer_email="robustseg@example.com",
    description="Robust multimodal semantic segmentation (RobustSeg) for ROS 2: camera, depth, LiDAR and events.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "generate_dataset = robustseg_core.commands:generate_dataset",
            "pretrain_encoder = robustseg_core.commands:pretrain_encoder",
            "train_teacher = robustseg_core.commands:train_teacher",
            "evaluate = robustseg_core.commands:evaluate",
            "train_student = robustseg_core.commands:train_student",
            "export_checkpoint = robustseg_core.commands:export_checkpoint",
            "average_checkpoints = robustseg_core.commands:average_checkpoints",
            "recalibrate_bn = robustseg_core.commands:recalibrate_bn",
            "export_onnx = robustseg_core.commands:export_onnx",
            "perception_node = robustseg_ros.commands:perception_node",
            "record_synthetic = robustseg_ros.commands:record_synthetic",
            "replay_bag = robustseg_ros.commands:replay_bag",
            "evaluate_bag = robustseg_ros.commands:evaluate_bag",
            "record_outputs = robustseg_ros.commands:record_outputs",
        ],
    },
)
