"""The perception node's logic without rclpy.Node plumbing: messages in, frames out.

``PerceptionPipeline`` is fed ``(message, now)`` pairs, ``now`` being the node clock in seconds
(``node.get_clock()``, so ``use_sim_time`` replay behaves like a live run). It converts each
message (``robustseg_ros.conversions``), records the sensor's health (``robustseg_ros.health``),
caches it in the synchroniser (``robustseg_ros.sync``) and returns a ``FrameJob``
(``robustseg_ros.frames``) when a frame is due: for a camera image once the other sensors' messages
of about its stamp are in (or ``sync.camera_wait_s`` has passed), from ``on_timer`` when the camera is
silent. ``process(job)`` encodes the frame's modalities with the ``robustseg_core.sensors`` encoders
at the camera's resolution and runs ``Segmenter.predict``. The live node and the offline bag
evaluation drive the same object in timestamp order, so they see the same frames.

A malformed message never raises: its ``MessageError`` is counted per kind in the sensor's health
(shown as WARN "malformed ..." for ``health.anomaly_hold_s``) and logged once per kind; so are the
input limits a message hits (a cloud above ``lidar.max_points``, events past
``events.max_buffered_events``) and events that cannot feed any frame (outside the packet's time window or
the sensor). Every usable message's content is measured (``robustseg_core.sensors.quality``) and judged
(``robustseg_ros.degradation``): a sensor with poor content is DEGRADED, and unless ``health.fuse_degraded`` names
it, it is left out of the frames it is DEGRADED in (``fusion_policy: validated`` also leaves out what the model does
better without). ``robustseg_ros.diagnostics`` builds what the pipeline reports about itself (``/diagnostics``,
``~/sensor_status``, frame statistics); its parameters are ``robustseg_ros.params``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header

from robustseg_core.classes import MODALITIES, colorize
from robustseg_core.sensors import CameraIntrinsics
from robustseg_core.sensors.camera import check_transform
from robustseg_core.sensors.quality import camera_quality, depth_quality, event_quality, lidar_quality
from robustseg_ros.compressed import camera_message_to_rgb, compressed_depth_to_metres
from robustseg_ros.conversions import (MessageError, camera_image_to_rgb, camera_info_to_intrinsics,
                                       depth_image_to_metres, pointcloud2_to_events, pointcloud2_to_xyzi,
                                       seconds_to_stamp, stamp_to_seconds)
from robustseg_ros.diagnostics import FrameStatistics, sensor_health_statuses, sensor_status_array
from robustseg_ros.event_buffer import EVENT_PIXEL_KIND, EVENT_TIME_KIND, EventWindowBuffer, check_events
from robustseg_ros.encoding import NO_CAMERA_INFO, encode_frame
from robustseg_ros.frames import FrameJob, FrameOutput, SensorPayload
from robustseg_ros.health import (FUTURE_STAMP, ZERO_STAMP, HealthMonitor, HealthStatus, SensorHealth, SensorState,
                                  excluded_modalities, payload_digest)
from robustseg_ros.params import MODALITY_OF_SENSOR, SENSOR_OF_MODALITY, SENSORS, ParameterError, PerceptionParams
from robustseg_ros.sync import NO_MESSAGE_WITHIN, FrameSynchronizer, SyncedFrame

#: A node clock that goes back by more than this (s) is a restarted replay: caches and health restart.
CLOCK_JUMP_BACK_S = 1.0

LidarExtrinsicLookup = Callable[[str, str, float], np.ndarray]


def input_message_types(params: PerceptionParams) -> dict[str, type]:
    """The message type of each input (sensor, and "camera_info") as the parameters configure it: compressed
    camera and depth transports, event packets or images."""
    return {"camera": CompressedImage if params["camera.transport"] != "raw" else Image,
            "camera_info": CameraInfo,
            "depth": CompressedImage if params["depth.transport"] != "raw" else Image,
            "events": Image if params["events.input_type"] == "image" else PointCloud2,
            "lidar": PointCloud2}


@dataclass(frozen=True)
class _PendingCameraFrame:
    """A camera image waiting for the other sensors: stamp (s), payload, node-clock deadline (s)."""

    stamp: float
    payload: SensorPayload
    deadline: float


class UnusableMessage(MessageError):
    """A well-formed message without usable content (an empty cloud, a depth image without valid pixels)."""

    def __init__(self, kind: str, problem: str, *, topic: str | None = None) -> None:
        super().__init__(f"{kind}: {problem}", topic=topic)
        self.kind = kind


class PerceptionPipeline:
    """Sync, health, encoding and inference of the perception node, fed with messages and node-clock times.

    ``segmenter``: a ``robustseg_core.inference.Segmenter`` (or alike: ``predict``, ``use_fusion``, ``use_convention``,
    ``modalities``, ``class_names``, ``device``), set to the parameters' fusion policy; ``logger``: anything with
    ``warning`` and ``info`` (rclpy or logging loggers); ``lidar_extrinsic_lookup(lidar_frame, camera_frame, stamp_s)``: when set,
    returns T_cam_lidar (4x4) for a cloud or raises ``LookupError`` (the node sets it to a tf2 lookup);
    ``topic_names``: sensor (and "camera_info") -> resolved topic name for logs and diagnostics (default: the
    parameters).

    Threading: the ``on_*`` methods and ``diagnostics`` run on one thread (the executor's); ``process``
    may run on another (the inference worker).
    """

    def __init__(self, params: PerceptionParams, segmenter, *, logger=None,
                 lidar_extrinsic_lookup: LidarExtrinsicLookup | None = None,
                 topic_names: Mapping[str, str] | None = None) -> None:
        self.params = params
        self.topic_names = {**params.topics(), **(topic_names or {})}
        self.segmenter = segmenter
        segmenter.use_fusion(params["fusion_policy"], params["fusion_min_gain"])
        self.logger = logger or logging.getLogger("robustseg_ros.pipeline")
        self.lidar_extrinsic_lookup = lidar_extrinsic_lookup
        self.model_modalities = tuple(segmenter.modalities)
        self.active_sensors = self._active_sensors(params)
        configs = {MODALITY_OF_SENSOR[sensor]: params.inputs[sensor].sync for sensor in SENSORS}
        self.sync = FrameSynchronizer(MODALITIES, configs, pivot="rgb", timer_period_s=params["health.check_period_s"])
        for sensor in (sensor for sensor in SENSORS if sensor not in self.active_sensors):
            self.sync.set_enabled(MODALITY_OF_SENSOR[sensor], False)
        self.health = HealthMonitor({MODALITY_OF_SENSOR[sensor]: params.inputs[sensor].health
                                     for sensor in self.active_sensors},
                                    judges={MODALITY_OF_SENSOR[sensor]: params.quality_judge(sensor)
                                            for sensor in self.active_sensors})
        self.event_keep_s = (params["events.window_s"] + params["events.max_age_s"] + params["events.tolerance_s"])
        self.event_buffer = EventWindowBuffer(self.event_keep_s, params["events.max_buffered_events"])
        self.camera_intrinsics: CameraIntrinsics | None = None
        self.camera_frame_id = ""
        self._camera_size: tuple[int, int] | None = None
        self._camera_info_key: tuple | None = None
        self._started = False
        self._last_now: float | None = None
        self._stragglers: tuple[float, float, float] | None = None  # (low, high stamp, until): see _clock_running
        self.generation = 0  # restarts so far: a frame built before the last one is not processed
        self._published_states: dict[str, SensorState] = {}
        self._logged_once: set[str] = set()
        self.statistics = FrameStatistics()
        self._pending_camera: _PendingCameraFrame | None = None
        self._expected_periods_s = {MODALITY_OF_SENSOR[sensor]: params.inputs[sensor].health.period_s
                                    for sensor in self.active_sensors}

    # ------------------------------------------------------------------ inputs

    def _active_sensors(self, params: PerceptionParams) -> tuple[str, ...]:
        """The sensors enabled in ``params`` whose modality is an input of the model; ``ParameterError`` if none."""
        active = tuple(sensor for sensor in SENSORS
                       if params.inputs[sensor].enabled and MODALITY_OF_SENSOR[sensor] in self.model_modalities)
        if not active:
            raise ParameterError(f"no enabled input would feed the model (its modalities: "
                                 f"{', '.join(self.model_modalities)}); keep at least one of them enabled")
        return active

    def on_camera(self, msg: Image | CompressedImage, now: float) -> FrameJob | None:
        """A camera image (rgb8, bgr8, mono8, rgba8, bgra8; or jpeg / png compressed): triggers a frame when usable."""
        topic = self.topic_names["camera"]
        return self._receive("rgb", msg, now, lambda: camera_message_to_rgb(msg, topic=topic), frozen_check=True,
                             measure=camera_quality)

    def on_camera_info(self, msg: CameraInfo, now: float) -> None:
        """The camera's CameraInfo: intrinsics for depth and LiDAR encoding, output size and frame_id for
        timer frames (used also when the camera image input is disabled)."""
        if not self._clock_running(now):
            return
        key = (msg.width, msg.height, tuple(msg.k), msg.binning_x, msg.binning_y, msg.roi.width, msg.roi.height,
               msg.header.frame_id)
        if key == self._camera_info_key:
            return
        try:
            self.camera_intrinsics = camera_info_to_intrinsics(msg, topic=self.topic_names["camera_info"])
        except MessageError as error:
            if "rgb" in self.health.modalities:
                self._record_error("rgb", error.counted_as("camera_info "), str(error), now)
            else:
                self._log_once(f"camera_info {error.counted_as()}", f"camera_info: malformed message: {error}")
            return
        self.camera_frame_id = msg.header.frame_id
        self._camera_info_key = key

    def on_depth(self, msg: Image | CompressedImage, now: float) -> FrameJob | None:
        """A depth image (32FC1 metres, 16UC1 millimetres, or 16UC1 compressedDepth png; registered to the camera)."""
        topic = self.topic_names["depth"]
        to_metres = compressed_depth_to_metres if isinstance(msg, CompressedImage) else depth_image_to_metres

        def convert() -> np.ndarray:
            metres = to_metres(msg, topic=topic)
            if not (metres > 0).any():
                raise UnusableMessage("no valid depth", "every pixel is 0, NaN, inf or negative", topic=topic)
            return metres

        return self._receive("depth", msg, now, convert, frozen_check=True, measure=depth_quality)

    def on_lidar(self, msg: PointCloud2, now: float) -> FrameJob | None:
        """A LiDAR PointCloud2 (fields x, y, z; intensity optional); above ``lidar.max_points`` points it is read
        uniformly subsampled (counted)."""
        topic = self.topic_names["lidar"]
        budget = self.params["lidar.max_points"]

        def convert() -> np.ndarray:
            points = pointcloud2_to_xyzi(msg, intensity_field=self.params["lidar.intensity_field"],
                                         intensity_scale=self.params["lidar.intensity_scale"], max_points=budget,
                                         topic=topic)
            if len(points) == 0:
                raise UnusableMessage("empty cloud", "no point with finite x, y, z", topic=topic)
            fields = [field.name for field in msg.fields]
            if self.params["lidar.intensity_field"] not in fields:
                self._log_once("intensity", f"lidar: the cloud has no field {self.params['lidar.intensity_field']!r} "
                                            f"(fields {', '.join(fields)}): intensity 0; set lidar.intensity_field")
            size = int(msg.width) * int(msg.height)
            if size > budget:
                self._record_limit("lidar", "point budget", f"a cloud of {size} points was subsampled uniformly to "
                                                            f"{len(points)} (lidar.max_points {budget})", now)
            return points

        return self._receive("lidar", msg, now, convert, frozen_check=True, extrinsic=True, measure=lidar_quality)

    def on_events(self, msg: PointCloud2 | Image, now: float) -> FrameJob | None:
        """An event packet (PointCloud2 x, y, t, polarity) or a rendered event frame (Image), per events.input_type."""
        topic = self.topic_names["events"]
        if self.params["events.input_type"] == "image":
            return self._receive("event", msg, now, lambda: camera_image_to_rgb(msg, topic=topic))

        def convert() -> np.ndarray:
            events = pointcloud2_to_events(msg, topic=topic)
            unreadable = int(msg.width) * int(msg.height) - len(events)
            if unreadable:
                self._record_error("event", "event values", f"{unreadable} events with a non-finite t or x, y not "
                                                            "whole numbers in 0..65535 dropped", now, unreadable)
            return events

        return self._receive("event", msg, now, convert, measure=lambda events: event_quality(
            len(events), self.params.inputs["events"].health.period_s))

    def on_timer(self, now: float) -> FrameJob | None:
        """Periodic check: apply health exclusions; a frame from the other sensors while the camera is silent."""
        if not self._clock_running(now):
            return None
        job = self._release_camera_frame(now)
        if job is not None:
            return job
        statuses = self._apply_health(now)
        frame = self.sync.on_timer(now)
        return self._job(frame, statuses) if frame is not None else None

    def _receive(self, modality: str, msg, now: float, convert: Callable[[], np.ndarray], *,
                 frozen_check: bool = False, extrinsic: bool = False,
                 measure: Callable[[np.ndarray], dict[str, float]] | None = None) -> FrameJob | None:
        """Convert, record health, judge the content, cache; the frame a usable camera image triggers.
        ``frozen_check``: digest the payload to detect frozen streams (not for events: a static scene gives
        identical packets); ``measure``: the quality statistics of the converted data."""
        if not self._clock_running(now) or SENSOR_OF_MODALITY[modality] not in self.active_sensors:
            return None
        start = time.perf_counter()
        try:
            data = convert()
            T_cam_lidar = self._lidar_extrinsic(msg) if extrinsic else None
        except MessageError as error:  # the message arrived but cannot be used
            self._record_error(modality, error.counted_as(), str(error), now)
            self.health[modality].record_unusable(now)
            return None
        convert_ms = (time.perf_counter() - start) * 1e3
        stamp = stamp_to_seconds(msg.header.stamp)
        if self._stragglers is not None and now < self._stragglers[2] and \
                max(self._stragglers[0], now + self.params["health.future_tolerance_s"]) < stamp <= self._stragglers[1]:
            return None  # sent just before the clock jumped back (a looped replay's last messages): not this timeline's
        digest = payload_digest(msg.data) if frozen_check else None
        anomalies = self.health.record_message(modality, stamp, now, digest)
        for kind in anomalies:
            if self.health[modality].should_log(kind):
                self.logger.warning(f"{SENSOR_OF_MODALITY[modality]}: {kind.replace('_', ' ')} "
                                    f"(stamp {stamp:.3f} s at {now:.3f} s); counted on /diagnostics, logged once")
        if ZERO_STAMP in anomalies or FUTURE_STAMP in anomalies:
            self.statistics.count_unsynchronised()
            return None
        sync_stamp = stamp
        if modality == "event" and self.params["events.input_type"] == "packets":
            data, sync_stamp = self._buffer_events(data, stamp, now)
        if modality == "depth" and self.camera_frame_id and msg.header.frame_id not in ("", self.camera_frame_id) \
                and self.health["depth"].should_log("frame_id"):  # used as registered to the camera all the same
            self.logger.warning(f"depth: frame_id '{msg.header.frame_id}' differs from the camera's "
                                f"'{self.camera_frame_id}'; depth is used as registered to the camera image (publish "
                                "aligned depth, e.g. a driver's aligned_depth_to_color topic); logged once")
        if modality == "rgb":
            self._camera_size = data.shape[:2]
            if self._camera_info_key is None:  # no CameraInfo yet: timer frames take the image's frame_id
                self.camera_frame_id = msg.header.frame_id or self.camera_frame_id
        quality_ms = 0.0
        if measure is not None and self.health[modality].judge is not None:
            start = time.perf_counter()
            self.health[modality].record_quality(measure(data), now)
            quality_ms = (time.perf_counter() - start) * 1e3
        if modality == "event" and self.params["events.input_type"] == "packets":
            data = data[:0].copy()  # frames take events from the bounded buffer: the cache holds no second copy
        payload = SensorPayload(msg.header, data, convert_ms, T_cam_lidar, quality_ms)
        if modality == self.sync.pivot:
            return self._on_camera_frame(_PendingCameraFrame(stamp, payload, now + self.params["sync.camera_wait_s"]),
                                         now)
        self.sync.add(modality, sync_stamp, payload, now)
        return self._release_camera_frame(now)

    def _on_camera_frame(self, pending: _PendingCameraFrame, now: float) -> FrameJob | None:
        """A new camera image: it waits (up to ``sync.camera_wait_s``) for sensors whose message with about its
        stamp is due; an older camera image still waiting is segmented now, or dropped if the new one goes at once."""
        superseded, self._pending_camera = self._pending_camera, pending
        older_job = self._build_camera_frame(superseded, now) if superseded is not None else None
        job = self._release_camera_frame(now)
        if job is not None and older_job is not None:
            self.statistics.count_dropped()
        return job or older_job

    def _release_camera_frame(self, now: float) -> FrameJob | None:
        """The waiting camera image's frame once nothing it waits for is due any more or its wait is over."""
        pending = self._pending_camera
        if pending is None or (now < pending.deadline and self.awaited_sensors(pending.stamp, now)):
            return None
        self._pending_camera = None
        return self._build_camera_frame(pending, now)

    def _build_camera_frame(self, pending: _PendingCameraFrame, now: float) -> FrameJob | None:
        statuses = self._apply_health(now)
        frame = self.sync.add(self.sync.pivot, pending.stamp, pending.payload, now)
        return self._job(frame, statuses) if frame is not None else None

    def awaited_sensors(self, stamp: float, now: float) -> tuple[str, ...]:
        """Usable sensors whose next message, due by their expected rate, would be nearer ``stamp`` (s) than
        anything cached: a camera frame at ``stamp`` is worth waiting for them (``FrameSynchronizer.awaited``)."""
        return tuple(SENSOR_OF_MODALITY[modality]
                     for modality in self.sync.awaited(stamp, now, self._expected_periods_s))

    def _lidar_extrinsic(self, msg: PointCloud2) -> np.ndarray:
        """T_cam_lidar: ``lidar.transform`` (for ``lidar.frame_id`` clouds) or the tf2 lookup at the cloud's stamp."""
        if self.lidar_extrinsic_lookup is None:
            expected = self.params["lidar.frame_id"]
            if expected and msg.header.frame_id != expected:  # refused: lidar.transform would misproject it
                raise UnusableMessage("frame_id", f"'{msg.header.frame_id}', but lidar.transform maps lidar.frame_id "
                                      f"'{expected}' to the camera", topic=self.topic_names["lidar"])
            return self.params.T_cam_lidar
        camera_frame = self.params["lidar.camera_frame"] or self.camera_frame_id
        try:
            if not camera_frame:
                raise LookupError("no camera frame for the tf2 lookup yet (no CameraInfo and lidar.camera_frame empty)")
            transform = self.lidar_extrinsic_lookup(msg.header.frame_id, camera_frame, stamp_to_seconds(msg.header.stamp))
        except LookupError as error:
            raise UnusableMessage("no transform", str(error), topic=self.topic_names["lidar"]) from error
        return check_transform(transform)

    def _buffer_events(self, events: np.ndarray, stamp: float, now: float) -> tuple[np.ndarray, float]:
        """A packet's events that can feed frames, into the buffer (those outside its time window, or the bound,
        are counted). Returns them and the time (s) the packet covers, which it joins frames by: the later of its
        stamp and its newest event (a packet stamped at its first event, t = dt after the stamp, covers up to it)."""
        checked = check_events(events, stamp, self.event_keep_s, self.params["health.future_tolerance_s"])
        if checked.outside_time:
            self._record_error("event", EVENT_TIME_KIND, f"{checked.outside_time} events outside the packet's window "
                               f"{stamp - self.event_keep_s:.3f}..{stamp + self.params['health.future_tolerance_s']:.3f}"
                               " s dropped (event times must be seconds of the message clock)", now,
                               checked.outside_time)
        dropped = self.event_buffer.add(checked.events)
        if dropped:
            self._record_limit("event", "event buffer", f"{dropped} events dropped to stay within "
                                                        f"events.max_buffered_events {self.event_buffer.max_events}",
                               now, dropped)
        return checked.events, max(stamp, float(checked.events["t"].max())) if len(checked.events) else stamp

    def _event_sensor_size(self) -> tuple[int, int] | None:
        """(width, height) px of the event sensor: the parameters, else the camera image's, else the CameraInfo's;
        None while unknown. A frame's events are checked against it and accumulated in it."""
        if self.params["events.sensor_width"]:
            return self.params["events.sensor_width"], self.params["events.sensor_height"]
        if self._camera_size is not None:
            return self._camera_size[1], self._camera_size[0]
        if self.camera_intrinsics is not None:
            return self.camera_intrinsics.width, self.camera_intrinsics.height
        return None

    def _record_error(self, modality: str, kind: str, text: str, now: float, count: int = 1) -> None:
        if self.health.record_error(modality, kind, text, now, count):
            self.logger.warning(f"{SENSOR_OF_MODALITY[modality]}: {kind}: {text}; counted on /diagnostics as "
                                "malformed, logged once per kind")

    def _record_limit(self, modality: str, kind: str, text: str, now: float, count: int = 1) -> None:
        if self.health[modality].record_limit(kind, text, now, count):
            self.logger.warning(f"{SENSOR_OF_MODALITY[modality]}: input limit ({kind}): {text}; "
                                "counted on /diagnostics, logged once per kind")

    def _apply_health(self, now: float) -> dict[str, HealthStatus]:
        """Health of every monitored sensor; STALE and DEAD ones are excluded from frames."""
        statuses = self.health.statuses(now)
        excluded = excluded_modalities(statuses)
        for modality in statuses:
            self.sync.set_unhealthy(modality, excluded.get(modality))
        return statuses

    def restart(self, now: float) -> None:
        """Forget all inputs (sync, health, events, waiting frame); health restarts at ``now`` (s), or later if 0.
        Frames built before are not processed (``FrameJob.generation``)."""
        self.generation += 1
        self._stragglers = None
        self.sync.reset()
        self.event_buffer.clear()
        self._pending_camera = None
        self._started = now > 0
        self._last_now = now if self._started else None
        if self._started:
            self.health.reset(now)

    def _clock_running(self, now: float) -> bool:
        """False while ROS time is 0 (use_sim_time before /clock); restarts state when the clock jumps back."""
        if now <= 0:
            return False
        if not self._started:
            self.health.reset(now)
            self._started = True
        elif self._last_now is not None and now < self._last_now - CLOCK_JUMP_BACK_S:
            self.logger.warning(f"node clock jumped back from {self._last_now:.3f} s to {now:.3f} s "
                                "(replay restarted?): synchronisation and health restart")
            tolerance, jumped_from = self.params["health.future_tolerance_s"], self._last_now
            self.restart(now)  # messages stamped in the last second before the jump, arriving in the next one:
            self._stragglers = (jumped_from - CLOCK_JUMP_BACK_S, jumped_from + tolerance, now + CLOCK_JUMP_BACK_S)
        self._last_now = now
        return True

    def _job(self, frame: SyncedFrame, statuses: dict[str, HealthStatus] | None) -> FrameJob | None:
        if statuses is None:
            statuses = self.health.statuses(frame.now)
        camera = frame.entries["rgb"]
        if camera is not None:
            header = Header(stamp=camera.payload.header.stamp, frame_id=camera.payload.header.frame_id)
            size = camera.payload.data.shape[:2]
        else:
            newest = next((entry for entry in frame.entries.values()
                           if entry is not None and entry.stamp == frame.stamp), None)
            stamp = newest.payload.header.stamp if newest is not None else seconds_to_stamp(frame.stamp)
            header = Header(stamp=stamp, frame_id=self.camera_frame_id)
            size = self._camera_size
            if self.camera_intrinsics is not None:
                size = (self.camera_intrinsics.height, self.camera_intrinsics.width)
        if size is None:
            self.statistics.count_skipped()
            self._log_once("no size", "a timer frame was skipped: no CameraInfo and no camera image received yet, "
                                      "so the output size is unknown")
            return None
        intrinsics, geometry_problem = self._frame_geometry(tuple(size), frame.now)
        self._record_fusion(frame, geometry_problem)
        depth = frame.entries["depth"]
        if depth is not None and depth.payload.data.shape != tuple(size):
            self._record_error("depth", "size", f"depth image {depth.payload.data.shape[1]}x"
                               f"{depth.payload.data.shape[0]} resized to the camera's {size[1]}x{size[0]} (nearest "
                               "neighbour); it must be registered to the camera", frame.now)
        window = (frame.stamp - self.params["events.window_s"], frame.stamp)
        events = None
        if frame.entries["event"] is not None and self.params["events.input_type"] == "packets":
            events = self._frame_events(window, frame.now)
        return FrameJob(frame, header, (int(size[0]), int(size[1])), intrinsics, events, window, statuses,
                        geometry_problem, self._event_sensor_size(), self.generation)

    def _frame_events(self, window: tuple[float, float], now: float) -> np.ndarray:
        """The buffered events of a frame's ``window`` (s) on the event sensor of this frame; others are counted."""
        width, height = self._event_sensor_size()
        cut = self.event_buffer.window(*window, (width, height))
        if cut.outside_sensor:
            self._record_error("event", EVENT_PIXEL_KIND, f"{cut.outside_sensor} events outside the {width}x{height} "
                               "sensor dropped (check events.sensor_width/height)", now, cut.outside_sensor)
        return cut.events

    def _record_fusion(self, frame: SyncedFrame, geometry_problem: str) -> None:
        """Tell each sensor's health whether ``frame`` can use its data, where that does not follow from its health
        (nothing within tolerance, no camera geometry for depth and LiDAR): a lasting miss is WARN "not fused"
        (``SensorHealth.record_fusion``)."""
        for modality in self.health.modalities:
            reason = frame.reasons.get(modality, "")
            if frame.entries[modality] is not None:
                reason = f"not encoded: {geometry_problem}" if geometry_problem and modality in ("depth", "lidar") else None
            elif not reason.startswith(NO_MESSAGE_WITHIN):
                reason = None  # absent for its health (stale, dead, degraded) or disabled: said elsewhere, ends a run
            if self.health[modality].record_fusion(reason, frame.now):
                self.logger.warning(f"{SENSOR_OF_MODALITY[modality]}: left out of every frame for more than its max "
                                    f"age: {reason}; WARN on /diagnostics, logged once")

    def _frame_geometry(self, size: tuple[int, int], now: float) -> tuple[CameraIntrinsics | None, str]:
        """The camera intrinsics for an output of ``size`` (height, width) px, or None and why. A CameraInfo of
        another size is counted (malformed ``camera_info size``) and rescaled only when its aspect ratio is the
        image's (``CameraIntrinsics.for_image``); otherwise depth and LiDAR cannot be placed in the image."""
        intrinsics = self.camera_intrinsics
        if intrinsics is None or (intrinsics.height, intrinsics.width) == size:
            return intrinsics, "" if intrinsics is not None else NO_CAMERA_INFO
        problem = f"CameraInfo is {intrinsics.width}x{intrinsics.height} but the camera image {size[1]}x{size[0]}"
        try:
            intrinsics, problem, text = intrinsics.for_image(size[1], size[0]), "", problem + "; intrinsics rescaled"
        except ValueError as error:
            intrinsics, problem, text = None, f"{problem}: {error}", f"{problem}: depth and LiDAR not encoded"
        if "rgb" in self.health.modalities:
            self._record_error("rgb", "camera_info size", text, now)
        else:
            self._log_once("camera_info size", f"camera_info: {text}")
        return intrinsics, problem

    def _log_once(self, key: str, text: str) -> None:
        if key not in self._logged_once:
            self._logged_once.add(key)
            self.logger.warning(text)

    # ------------------------------------------------------------------ processing

    def process(self, job: FrameJob, *, with_color: bool = True, with_overlay: bool = False,
                with_confidence: bool = True, fuse_degraded: Collection[str] | None = None) -> FrameOutput | None:
        """Encode and segment one frame, with the colour mask, the overlay and the confidence when asked (the node
        asks only when they have subscribers); None when no modality could be encoded (counted).
        ``fuse_degraded``: the modalities fused while DEGRADED (default those ``health.fuse_degraded`` names; the
        bag evaluation asks for other choices too). A frame built before the clock jumped back is dropped."""
        if job.generation != self.generation:
            self.statistics.count_dropped()
            return None
        start = time.perf_counter()
        if fuse_degraded is None:
            fuse_degraded = self.params.fused_degraded
        encoded, reasons, notes = self.encode(job, fuse_degraded=fuse_degraded)
        encoded_at = time.perf_counter()
        if not encoded:
            self.statistics.count_skipped()
            return None
        images = {modality: encoded.get(modality) for modality in self.model_modalities}
        threshold = self.params["output.confidence_threshold"]
        result = self.segmenter.predict(images, output_size=job.size,
                                        with_confidence=with_confidence or threshold > 0)
        predicted_at = time.perf_counter()
        labels = result.labels
        if threshold > 0:
            labels = np.where(result.confidence < threshold, np.uint8(255), labels).astype(np.uint8)
        color = colorize(labels) if with_color or with_overlay else None
        overlay, rgb, alpha = None, encoded.get("rgb"), self.params["output.overlay_alpha"]
        if with_overlay:
            overlay = color if rgb is None else cv2.addWeighted(color, alpha, np.ascontiguousarray(rgb), 1 - alpha, 0.0)
        done = time.perf_counter()
        segmenter_ms = result.timings_ms
        payloads = [entry.payload for entry in job.frame.entries.values() if entry is not None]
        timings = {
            "convert": sum(payload.convert_ms for payload in payloads),
            "quality": sum(payload.quality_ms for payload in payloads),
            "encode": (encoded_at - start) * 1e3, "preprocess": segmenter_ms.get("preprocess", 0.0),
            "infer": segmenter_ms.get("infer", 0.0),
            "postprocess": segmenter_ms.get("postprocess", 0.0) + (done - predicted_at) * 1e3}
        reasons.update(result.left_out)
        fed = tuple(modality for modality in MODALITIES if modality in encoded and modality not in result.left_out)
        return FrameOutput(job, labels, color, result.confidence, overlay, encoded, fed, reasons, timings, notes,
                           result.agreement)

    def encode(self, job: FrameJob, *, fuse_degraded: Collection[str] = ()
               ) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, str]]:
        """``encoding.encode_frame`` of ``job`` with these parameters; an encoding failure is logged once per sensor."""
        return encode_frame(job, self.params, self.model_modalities, fuse_degraded, lambda modality, error: self._log_once(
            f"encode {modality}", f"{SENSOR_OF_MODALITY[modality]}: could not encode: {error}"))

    def apply_live_params(self, params: PerceptionParams, now: float) -> None:
        """Take new values of the live parameters (``params.LIVE_PARAMETERS``): the outputs read ``params`` per
        frame, the segmenter gets ``missing_convention``, ``fusion_policy`` and ``fusion_min_gain``, each sensor
        its health thresholds, a sensor switched on or off joins or leaves sync and health (its health starts
        afresh), and the content-quality judges follow ``health.quality_checks`` and the ``health.degraded_*``
        settings (a judge that stays keeps its history). ``ValueError``, with nothing changed, when no enabled
        input would feed the model or the model cannot serve the fusion policy."""
        active = self._active_sensors(params)
        self.segmenter.use_fusion(params["fusion_policy"], params["fusion_min_gain"])  # may refuse: before any change
        self.params = params
        self.segmenter.use_convention(params["missing_convention"])
        monitored = {}
        for sensor in SENSORS:
            modality = MODALITY_OF_SENSOR[sensor]
            self.sync.set_enabled(modality, sensor in active)
            if sensor in active:
                monitored[modality] = self.health.sensors.get(modality) or SensorHealth(params.inputs[sensor].health, now)
                monitored[modality].config = params.inputs[sensor].health
                monitored[modality].judge = params.quality_judge(sensor, monitored[modality].judge)
        self.health.sensors = monitored
        self._expected_periods_s = {MODALITY_OF_SENSOR[sensor]: params.inputs[sensor].health.period_s
                                    for sensor in active}
        self.active_sensors = active

    # ------------------------------------------------------------------ status messages

    def sensor_status(self, output: FrameOutput) -> DiagnosticArray:
        """``~/sensor_status`` of a segmented frame (``diagnostics.sensor_status_array``)."""
        return sensor_status_array(output, self.topic_names)

    def health_changed(self, now: float) -> bool:
        """True when some sensor's state differs from the last ``diagnostics`` message (publish it now)."""
        if not self._clock_running(now):
            return False
        states = {modality: status.state for modality, status in self.health.statuses(now).items()}
        return states != self._published_states

    def diagnostics(self, now: float) -> DiagnosticArray:
        """``/diagnostics``: one status per sensor ("robustseg: lidar" ...) and one for the model."""
        health = self.health.statuses(now) if self._clock_running(now) else {}
        self._published_states = {modality: status.state for modality, status in health.items()}
        enabled = {sensor: self.params.inputs[sensor].enabled for sensor in SENSORS}
        buffer = {"event": {"buffered_events": str(self.event_buffer.events),
                            "buffered_bytes": str(self.event_buffer.bytes)}}
        statuses = sensor_health_statuses(health, enabled, self.active_sensors, self.topic_names, buffer)
        statuses.append(self.statistics.model_status(now, self.segmenter, self.sync.counters,
                                                     self.params["health.anomaly_hold_s"]))
        return DiagnosticArray(header=Header(stamp=seconds_to_stamp(max(now, 0.0))), status=statuses)

