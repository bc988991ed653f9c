"""What one frame is at each step of the perception pipeline: a cached sensor payload, the job to
process, and the segmented output (plain data, shared by the pipeline, the node, /diagnostics and the
bag evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from std_msgs.msg import Header

from robustseg_core.sensors import CameraIntrinsics
from robustseg_ros.health import HealthStatus
from robustseg_ros.sync import SyncedFrame


@dataclass(frozen=True)
class SensorPayload:
    """A converted message as cached for synchronisation.

    ``header``: the message's header; ``data``: rgb uint8 [H, W, 3] (camera, event image), depth float32
    [H, W] metres, LiDAR points float32 [N, 4], or events ``EVENT_DTYPE`` [N] (the packet's events that
    passed the checks); ``T_cam_lidar``: the extrinsic valid for this cloud (LiDAR only); ``convert_ms``:
    conversion time; ``quality_ms``: time measuring and judging its content quality.
    """

    header: Header
    data: np.ndarray
    convert_ms: float
    T_cam_lidar: np.ndarray | None = None
    quality_ms: float = 0.0


@dataclass(frozen=True)
class FrameJob:
    """Everything ``PerceptionPipeline.process`` needs for one frame, snapshotted when the frame was built.

    ``header``: the outputs' header (the camera image's, or the frame stamp + camera frame_id);
    ``size``: output (height, width) px; ``intrinsics``: camera intrinsics at that size, None when they
    are unknown, ``geometry_problem`` saying why; ``events``/``event_window``: the events of the window (s)
    ending at the frame stamp (packets input); ``statuses``: sensor health when the frame was built;
    ``event_sensor_size``: (width, height) px of the event sensor the events were checked against (None:
    unknown, the output size); ``generation``: the pipeline's restarts when it was built.
    """

    frame: SyncedFrame
    header: Header
    size: tuple[int, int]
    intrinsics: CameraIntrinsics | None
    events: np.ndarray | None
    event_window: tuple[float, float]
    statuses: dict[str, HealthStatus]
    geometry_problem: str = ""
    event_sensor_size: tuple[int, int] | None = None
    generation: int = 0

    @property
    def newest_input_stamp(self) -> float:
        """Newest header stamp (s) among the messages that joined the frame."""
        return max(entry.stamp for entry in self.frame.entries.values() if entry is not None)


@dataclass
class FrameOutput:
    """One segmented frame at camera resolution.

    ``labels`` uint8 [H, W] (255 unknown), ``color`` / ``overlay`` uint8 [H, W, 3] RGB and ``confidence``
    float32 [H, W] (each None when not asked for); ``encoded``: the modality images given to the model;
    ``fed``: modalities that fed it; ``reasons``: why each other modality did not; ``notes``: remarks on fed
    modalities (a DEGRADED one fused); ``timings_ms``: convert, quality, encode, preprocess, infer,
    postprocess; ``agreement``: per fed modality, the cosine similarity of its deepest features with the
    fused ones (``Segmenter``'s model-side evidence, -1..1).
    """

    job: FrameJob
    labels: np.ndarray
    color: np.ndarray | None
    confidence: np.ndarray | None
    overlay: np.ndarray | None
    encoded: dict[str, np.ndarray]
    fed: tuple[str, ...]
    reasons: dict[str, str]
    timings_ms: dict[str, float]
    notes: dict[str, str] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)

    @property
    def header(self) -> Header:
        return self.job.header
