"""RobustSeg core: ROS-free PyTorch library for robust multimodal semantic segmentation.

Nothing in this package imports ROS; the ``robustseg_ros`` package adapts it to ROS 2.
"""

__version__ = "0.1.0"
