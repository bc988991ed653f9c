"""The perception node's per-frame output messages, built in one place for the node that publishes them and
for the recorders that write them into a bag (``bagtools.recorder``).

Topics are relative to the node (``~/segmentation`` ...); ``OUTPUT_TOPICS`` names each with its type.
"""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image
from std_msgs.msg import Float32

from robustseg_ros.conversions import numpy_to_image
from robustseg_ros.frames import FrameOutput

#: Per-frame outputs: name under the node's namespace (``~/<name>``) -> message type.
OUTPUT_TOPICS: dict[str, type] = {
    "segmentation": Image,        # mono8 class ids, 255 unknown
    "segmentation_color": Image,  # rgb8 palette (only when asked)
    "confidence": Image,          # 32FC1 max softmax probability (only when asked)
    "overlay": Image,             # rgb8 camera + colour mask (only when asked)
    "latency_ms": Float32,        # node clock at publish - newest input stamp (ms)
    "sensor_status": DiagnosticArray,
}


def image_messages(output: FrameOutput) -> dict[str, Image]:
    """The frame's image outputs with the frame's header: segmentation, and the colour mask, the confidence
    and the overlay when they were computed."""
    header = output.header
    messages = {"segmentation": numpy_to_image(output.labels, "mono8", header)}
    if output.color is not None:
        messages["segmentation_color"] = numpy_to_image(output.color, "rgb8", header)
    if output.confidence is not None:
        messages["confidence"] = numpy_to_image(output.confidence, "32FC1", header)
    if output.overlay is not None:
        messages["overlay"] = numpy_to_image(output.overlay, "rgb8", header)
    return messages

