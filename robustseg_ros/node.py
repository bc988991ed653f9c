"""``PerceptionNode``: the thin rclpy adapter around ``PerceptionPipeline``, a managed (lifecycle) node
(docs/perception_node.md).

Lifecycle (``rclpy.lifecycle``): *configure* reads the parameters, loads the model on its backend and
warms it up, builds the pipeline and the output publishers; *activate* publishes the class names,
subscribes to each enabled input with its own topic, transport and QoS, and starts the inference worker
(``worker.InferenceWorker``) and the health timer; *deactivate* unsubscribes, lets the frame in
progress finish and stops publishing; *cleanup* frees the model; *shutdown* ends the node. With
``autostart`` (the default) the constructor configures and activates at once, so ``perception_node`` starts
as an unmanaged node did; a failing configure then raises its error. A transition that is not allowed
in the current state is refused with the reason in the log and on /diagnostics, and nothing changes.
Outputs nobody subscribes to (colour mask, overlay, confidence) are not computed.

/diagnostics is not a managed output: it reports the lifecycle state in every state, and the sensors
and the model while active. Parameters marked live in ``params.PARAMETERS`` change with ``ros2 param
set`` (validated with the others; an invalid value is refused with the reason); the rest are read-only.
All times come from ``self.get_clock()``, so ``use_sim_time`` works.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
import time
from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from std_msgs.msg import Float32, Header, String

from robustseg_core.errors import UserError
from robustseg_ros.conversions import nanoseconds_to_seconds, seconds_to_nanoseconds, seconds_to_stamp
from robustseg_ros.diagnostics import DIAGNOSTIC_PREFIX, lifecycle_status, status_prefix
from robustseg_ros.frames import FrameJob
from robustseg_ros.outputs import OUTPUT_TOPICS, image_messages
from robustseg_ros.params import (
    NODE_NAME,
    PARAMETER_DEFAULTS,
    PARAMETERS,
    ParameterError,
    ParameterSpec,
    PerceptionParams,
    describe_unknown,
    load_segmenter,
    transform_from_parameter,
)
from robustseg_ros.pipeline import PerceptionPipeline, input_message_types
from robustseg_ros.worker import InferenceWorker

#: The public lifecycle transitions by id (lifecycle_msgs/Transition), for naming one refused by id.
TRANSITION_LABELS = {Transition.TRANSITION_CONFIGURE: "configure", Transition.TRANSITION_CLEANUP: "cleanup",
                     Transition.TRANSITION_ACTIVATE: "activate", Transition.TRANSITION_DEACTIVATE: "deactivate",
                     Transition.TRANSITION_UNCONFIGURED_SHUTDOWN: "shutdown",
                     Transition.TRANSITION_INACTIVE_SHUTDOWN: "shutdown",
                     Transition.TRANSITION_ACTIVE_SHUTDOWN: "shutdown"}

try:
    from vision_msgs.msg import LabelInfo, VisionClass
except ImportError:  # vision_msgs is optional (not installable from the package index)
    LabelInfo = VisionClass = None

OUTPUT_QOS = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
DIAGNOSTICS_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
RELIABLE_INPUT_QOS = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
WORKER_STOP_TIMEOUT_S = 5.0
#: How often (s) the node looks for a transient-local CameraInfo publisher while no CameraInfo has come.
LATCHED_CHECK_PERIOD_S = 1.0
FAILURE_LOG_THROTTLE_S = 5.0
#: glibc mallopt options (malloc.h): never give freed heap memory back, and never serve a block with its own mmap.
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse (no trimming, no per-block mmap), as real-time ROS 2
    nodes do: every frame allocates and frees the same large buffers (images, point arrays, tensors), and
    without this each of them comes back as fresh pages whose first touch faults (on a VM several
    milliseconds per frame). The process's memory then stays at its peak instead of breathing. Process-wide;
    returns False where malloc is not glibc's."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, -1)) and bool(mallopt(M_MMAP_MAX, 0))


def parameter_type(default) -> int:
    """rcl_interfaces ParameterType of a ``ParameterSpec`` default."""
    if isinstance(default, bool):
        return ParameterType.PARAMETER_BOOL
    if isinstance(default, int):
        return ParameterType.PARAMETER_INTEGER
    if isinstance(default, float):
        return ParameterType.PARAMETER_DOUBLE
    if isinstance(default, str):
        return ParameterType.PARAMETER_STRING
    if isinstance(default, tuple) and all(isinstance(value, float) for value in default):
        return ParameterType.PARAMETER_DOUBLE_ARRAY
    raise TypeError(f"no ROS parameter type for default {default!r}")


def wrong_type_reason(parameter: Parameter, expected: Parameter.Type) -> str:
    """Why a value of another type is refused, as the start-up error says it (rclpy's reason names neither)."""
    wanted, given = (type_.name.lower().replace("_", " ") for type_ in (expected, parameter.type_))
    article = "an" if wanted[0] in "aeiou" else "a"
    integer_for_double = (parameter.type_, expected) == (Parameter.Type.INTEGER, Parameter.Type.DOUBLE)
    hint = f" (write {float(parameter.value)!r})" if integer_for_double else ""
    return f"parameter {parameter.name}: expected {article} {wanted}, got the {given} {parameter.value!r}{hint}"


def declare_parameter_spec(node: Node, spec: ParameterSpec):
    """Declare one typed, described parameter; returns its value. None is declared read-only (rclpy would then
    refuse it in every state): the node refuses a parameter that is not live unless it is unconfigured."""
    descriptor = ParameterDescriptor(name=spec.name, type=parameter_type(spec.default), description=spec.description)
    default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
    return node.declare_parameter(spec.name, default, descriptor).value


def declare_perception_parameters(node: Node) -> dict:
    """Declare every parameter of ``params.PARAMETERS`` on ``node``; returns name -> value."""
    return {spec.name: declare_parameter_spec(node, spec) for spec in PARAMETERS}


def subscription_qos(name: str) -> QoSProfile:
    """"sensor_data" (best effort, keep last 5) or "reliable" (keep last 5)."""
    return qos_profile_sensor_data if name == "sensor_data" else RELIABLE_INPUT_QOS


class PerceptionNode(LifecycleNode):
    """Multimodal segmentation node; ``node_kwargs`` go to ``rclpy.node.Node`` (context, parameter_overrides...).

    ``segmenter`` and ``pipeline`` exist from configure to cleanup; ``finished`` turns True on shutdown.
    ``interrupted()``: True once the process was asked to end (SIGINT, SIGTERM): the warm-up stops and
    ``start`` does not activate.
    """

    def __init__(self, *, interrupted: Callable[[], bool] = lambda: False, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._interrupted = interrupted
        if not keep_freed_memory():
            self.get_logger().info("malloc is not glibc's: freed memory is given back between frames")
        self.segmenter = None
        self.pipeline: PerceptionPipeline | None = None
        self.finished = False
        self._configure_error: Exception | None = None
        self._starting = False
        self._refused = ""
        self._outputs: dict = {}
        self._sensor_subscriptions: list = []
        self._health_timer = None
        self._latched_camera_info = False  # subscribed to a transient-local CameraInfo publisher
        self._latched_check_at = -LATCHED_CHECK_PERIOD_S  # time.monotonic() of the last look for one
        self._worker: InferenceWorker | None = None
        self._finishing_worker: InferenceWorker | None = None  # one that outlived its deactivation in a slow frame
        self._publishing = False
        self._publish_lock = threading.Lock()  # held while a frame is published: a deactivation waits for it
        # declared after the attributes above: a refused value raises here, and the context's clean-up then
        # destroys a node whose destroy_node finds everything it stops
        self.params = PerceptionParams(declare_perception_parameters(self))
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        # on the steady clock: the lifecycle status goes out even while ROS time stands (use_sim_time, no /clock)
        self.create_timer(self.params["health.diagnostics_period_s"], self._publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._type_errors: list[str] = []
        if hasattr(self, "add_pre_set_parameters_callback"):  # rclpy of Jazzy and later
            self.add_pre_set_parameters_callback(self._hold_wrongly_typed)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._explain_refused_transitions()
        self._check_unknown_parameters()
        if self.params["autostart"]:
            self.start()

    @property
    def lifecycle_state(self) -> str:
        """"unconfigured", "inactive", "active", "finalized" or a transition state such as "configuring"."""
        return self._state_machine.current_state[1]

    def start(self) -> None:
        """Configure and activate (what ``autostart`` does); raises the error that made configure fail."""
        self._starting = True  # the caller gets a failed configure's error, so on_configure does not log it too
        try:
            configured = self.trigger_configure()
        finally:
            self._starting = False
        if configured != TransitionCallbackReturn.SUCCESS:
            error = self._configure_error
            if error is None:
                raise RuntimeError(f"configure failed in state {self.lifecycle_state}")
            if isinstance(error, (UserError, OSError)):
                raise error
            raise UserError(f"configure failed: {error}") from error  # a one-line error, not a traceback
        if self._interrupted():  # a signal while the model loaded: the process ends, nothing is subscribed
            return
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError(f"activate failed; state {self.lifecycle_state}")

    # ------------------------------------------------------------------ lifecycle transitions

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._configure_error = None
        try:
            self.params = PerceptionParams({spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS})
            model_file, segmenter = load_segmenter(self.params)
            self._warm_up(segmenter)
            pipeline = PerceptionPipeline(
                self.params, segmenter, logger=self.get_logger(),
                lidar_extrinsic_lookup=self._tf_lookup() if self.params["lidar.use_tf"] else None,
                topic_names=self.params.topics(self.resolve_topic_name))
        except Exception as error:  # any failure leaves the node unconfigured, with its reason (not rclpy's ERROR)
            self._release_tf_listener()
            self._configure_error = error
            if not self._starting:
                self.get_logger().error(f"configure failed, still unconfigured: {error}")
            return TransitionCallbackReturn.FAILURE
        self.segmenter, self.pipeline = segmenter, pipeline
        self.get_logger().info(f"loaded {model_file} with backend {segmenter.backend.name} on {segmenter.device} "
                               f"(precision {segmenter.backend.precision}, modalities {', '.join(segmenter.modalities)}, "
                               f"short side {segmenter.short_side} px)")
        self._outputs = {name: self.create_lifecycle_publisher(kind, f"~/{name}", OUTPUT_QOS)
                         for name, kind in OUTPUT_TOPICS.items()}
        self._outputs["class_names"] = self.create_lifecycle_publisher(String, "~/class_names", LATCHED_QOS)
        if LabelInfo is not None:
            self._outputs["label_info"] = self.create_lifecycle_publisher(LabelInfo, "~/label_info", LATCHED_QOS)
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._finishing_worker is not None:  # never two workers on one model
            if not self._finishing_worker.stop(WORKER_STOP_TIMEOUT_S):
                self.get_logger().error("cannot activate: the previous activation's inference worker is still in a "
                                        "frame; try again")
                return TransitionCallbackReturn.FAILURE
            self._finishing_worker = None
        result = super().on_activate(state)
        self.pipeline.restart(self._now())  # what it saw before a deactivation is not this activation's health
        self._publish_class_names()
        self._worker = InferenceWorker(self._process, self.pipeline.statistics.count_dropped)
        self._publishing = True
        self._subscribe()
        self._health_timer = self.create_timer(self.params["health.check_period_s"], self._on_check)
        self.get_logger().info(f"active: inputs {', '.join(self.pipeline.active_sensors)}")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_activity()
        self.get_logger().info("inactive: unsubscribed, not publishing")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_cleanup(state)
        self._release_model()
        return result

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_activity()
        self._join_finishing_worker()
        self._release_model()
        self.finished = True
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error during a transition from {state.label}: back to unconfigured")
        self._stop_activity()
        self._release_model()
        return TransitionCallbackReturn.SUCCESS

    def _stop_activity(self) -> None:
        """Stop publishing frames, unsubscribe, stop the health timer and the worker (a frame in progress is
        finished but not published)."""
        with self._publish_lock:  # a frame being published is finished first; none is published afterwards
            self._publishing = False
        for subscription in self._sensor_subscriptions:
            self.destroy_subscription(subscription)
        self._sensor_subscriptions = []
        if self._health_timer is not None:
            self.destroy_timer(self._health_timer)
            self._health_timer = None
        if self._worker is not None:
            if not self._worker.stop(WORKER_STOP_TIMEOUT_S):  # it publishes nothing more; activate waits for it
                self.get_logger().warning(f"the inference worker is still in a frame after {WORKER_STOP_TIMEOUT_S} s; "
                                          "it will publish nothing")
                self._finishing_worker = self._worker
            self._worker = None

    def _join_finishing_worker(self) -> None:
        """Wait (``WORKER_STOP_TIMEOUT_S``) for a worker that outlived its deactivation, before the process exits
        under it; a warning when it is still in its frame."""
        if self._finishing_worker is not None and not self._finishing_worker.stop(WORKER_STOP_TIMEOUT_S):
            self.get_logger().warning(f"the inference worker is still in a frame {WORKER_STOP_TIMEOUT_S} s after "
                                      "shutdown")
        self._finishing_worker = None

    def _release_model(self) -> None:
        """Destroy the output publishers and free the model."""
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._outputs = {}
        self._release_tf_listener()
        self.segmenter = self.pipeline = None
        gc.collect()

    def _release_tf_listener(self) -> None:
        """Unsubscribe the tf listener (of a cleanup or a failed configure): the next configure makes its own."""
        if getattr(self, "_tf_listener", None) is not None:
            self._tf_listener.unregister()
            self._tf_listener = self._tf_buffer = None

    def _explain_refused_transitions(self) -> None:
        """Wrap the change_state service: a transition not available in the current state is refused with the
        reason logged and kept for /diagnostics (rclpy alone answers only success = false)."""
        service = self._service_change_state
        change_state = service.callback

        def checked(request, response):
            available = {label: transition_id for transition_id, label, *_ in self._state_machine.available_transitions}
            label, transition_id = request.transition.label, request.transition.id
            if not (label in available if label else transition_id in available.values()):
                wanted = repr(label) if label else (  # by id, as lifecycle managers send it
                    f"{TRANSITION_LABELS.get(transition_id, 'unknown')!r} (id {transition_id})")
                self._refused = (f"transition {wanted} is not allowed in state {self.lifecycle_state!r} (allowed: "
                                 f"{', '.join(available) or 'none'})")
                self.get_logger().warning(f"refused {self._refused}; node unchanged")
                response.success = False
                return response
            return change_state(request, response)

        service.callback = checked

    # ------------------------------------------------------------------ set-up

    def _check_unknown_parameters(self) -> None:
        """Name the parameters given to this node (parameter files, ``-p``, overrides) that it does not have:
        ``ParameterError`` with ``strict_parameters``, else a warning."""
        given = getattr(self, "_parameter_overrides", {})  # rclpy keeps the node's overrides here (no public API)
        unknown = sorted(name for name in given if not self.has_parameter(name))
        if not unknown:
            return
        text = f"unknown parameter(s) {describe_unknown(unknown)}"
        if self.params["strict_parameters"]:
            raise ParameterError(f"{text}; refused because strict_parameters is true")
        self.get_logger().warning(f"{text}: ignored (strict_parameters:=true refuses them)")

    def _warm_up(self, segmenter) -> None:
        iterations = self.params["warmup_iterations"]
        if iterations == 0:
            return
        start = time.perf_counter()
        for done in range(iterations):
            if self._interrupted():
                iterations = done
                break
            segmenter.warmup(self.params["warmup_height"], self.params["warmup_width"], 1)
        self.get_logger().info(f"warm-up: {iterations} frames of {self.params['warmup_width']}x"
                               f"{self.params['warmup_height']} in {time.perf_counter() - start:.2f} s")

    def _tf_lookup(self):
        try:
            import tf2_ros
        except ImportError:
            self.get_logger().warning("lidar.use_tf is true but tf2_ros is not installed: using lidar.transform")
            return None
        self._tf_buffer = tf2_ros.Buffer()
        self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, self)

        def lookup(lidar_frame: str, camera_frame: str, stamp_s: float):
            """T_cam_lidar from tf2 at the cloud's stamp (a static mount's transform holds at any stamp; a
            moving one's must be in the buffer, else the cloud counts as a "no transform" error)."""
            if stamp_s < 0:  # rclpy Time refuses it (ValueError); a garbage header is a failed lookup
                raise LookupError(f"no tf2 transform {camera_frame} <- {lidar_frame}: negative stamp {stamp_s} s")
            try:
                stamped = self._tf_buffer.lookup_transform(camera_frame, lidar_frame,
                                                           Time(nanoseconds=seconds_to_nanoseconds(stamp_s)))
            except tf2_ros.TransformException as error:
                raise LookupError(f"no tf2 transform {camera_frame} <- {lidar_frame}: {error}") from error
            translation, rotation = stamped.transform.translation, stamped.transform.rotation
            return transform_from_parameter([translation.x, translation.y, translation.z,
                                             rotation.x, rotation.y, rotation.z, rotation.w])

        return lookup

    def _publish_class_names(self) -> None:
        names = self.segmenter.class_names
        self._outputs["class_names"].publish(String(data="\n".join(names)))
        if "label_info" in self._outputs:
            label_info = LabelInfo(class_map=[VisionClass(class_id=index, class_name=name)
                                              for index, name in enumerate(names)],
                                   threshold=float(self.params["output.confidence_threshold"]))
            label_info.header.stamp = self.get_clock().now().to_msg()
            self._outputs["label_info"].publish(label_info)

    def _subscribe(self) -> None:
        """(Re)create the input subscriptions for the pipeline's active sensors and the CameraInfo."""
        for subscription in self._sensor_subscriptions:
            self.destroy_subscription(subscription)
        pipeline, topics, types = self.pipeline, self.params.topics(), input_message_types(self.params)
        # The camera last: of messages ready together, the executor serves earlier subscriptions first.
        handlers = {"depth": pipeline.on_depth, "events": pipeline.on_events, "lidar": pipeline.on_lidar,
                    "camera": pipeline.on_camera}
        # CameraInfo always: intrinsics, output size and frame_id, even while the camera image is disabled.
        self._sensor_subscriptions = [self.create_subscription(
            types["camera_info"], topics["camera_info"], lambda msg: pipeline.on_camera_info(msg, self._now()),
            subscription_qos(self.params["camera.qos"]))]
        self._latched_camera_info = False
        for sensor, handler in handlers.items():
            if sensor not in pipeline.active_sensors:
                if self.params[f"{sensor}.enabled"]:
                    self.get_logger().warning(f"{sensor} is enabled but the model has no "
                                              f"'{pipeline.params.inputs[sensor].modality}' input: not subscribed")
                continue
            self._sensor_subscriptions.append(self.create_subscription(
                types[sensor], topics[sensor], lambda msg, handle=handler: self._on_message(handle, msg),
                subscription_qos(self.params[f"{sensor}.qos"])))

    # ------------------------------------------------------------------ parameters

    def _hold_wrongly_typed(self, parameters: list[Parameter]) -> list[Parameter]:
        """Pre-set callback: a value of another type than its parameter's is swapped for the current value, and
        ``_on_set_parameters`` then refuses the change with a reason naming the parameter, both types and the
        value (rclpy's own type check answers "Wrong parameter type, expected '3' got '2'")."""
        self._type_errors = []
        checked = []
        for parameter in parameters:
            if parameter.name in PARAMETER_DEFAULTS and parameter.type_ != Parameter.Type.NOT_SET:
                expected = Parameter.Type(self.describe_parameter(parameter.name).type)
                if parameter.type_ != expected:
                    self._type_errors.append(wrong_type_reason(parameter, expected))
                    parameter = self.get_parameter(parameter.name)
            checked.append(parameter)
        return checked

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """Validate and apply parameter changes: live ones in any state, the others only while unconfigured (the
        next configure reads them)."""
        type_errors, self._type_errors = self._type_errors, []
        if type_errors:
            return SetParametersResult(successful=False, reason="; ".join(type_errors))
        changes = {parameter.name: parameter.value for parameter in parameters if parameter.name in PARAMETER_DEFAULTS}
        if not changes:
            return SetParametersResult(successful=True)
        try:
            params = self.params.with_changes(changes, configured=self.lifecycle_state != "unconfigured")
            if self.pipeline is not None:
                self.pipeline.apply_live_params(params, self._now())
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        self.params = params
        if self.lifecycle_state == "active" and any(name.endswith(".enabled") for name in changes):
            self._subscribe()
        if self.lifecycle_state == "active" and "output.confidence_threshold" in changes:
            self._publish_class_names()  # the latched label_info carries the threshold
        self.get_logger().info("parameters changed: " + ", ".join(f"{name}={value!r}" for name, value in changes.items()))
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ callbacks (executor thread)

    def _now(self) -> float:
        return nanoseconds_to_seconds(self.get_clock().now().nanoseconds)

    def _on_message(self, handler, msg) -> None:
        job = handler(msg, self._now())
        if job is not None and self._worker is not None:
            self._worker.submit(job)

    def _subscribe_latched_camera_info(self) -> None:
        """While no CameraInfo has come, subscribe to it once more, transient local, when a publisher offers it so:
        a CameraInfo latched before the node started (published once) reaches only a subscription that asks for
        it, and asking every publisher would make the volatile ones (camera drivers) warn of incompatible QoS.
        A CameraInfo that comes through both subscriptions is taken once (``PerceptionPipeline.on_camera_info``)."""
        if self._latched_camera_info or self.pipeline.camera_intrinsics is not None or \
                time.monotonic() < self._latched_check_at + LATCHED_CHECK_PERIOD_S:
            return
        self._latched_check_at = time.monotonic()
        topic = self.params.topics(self.resolve_topic_name)["camera_info"]
        offered = [info.qos_profile for info in self.get_publishers_info_by_topic(topic)
                   if info.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL]
        if not offered:
            return
        reliable = all(qos.reliability == ReliabilityPolicy.RELIABLE for qos in offered)
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        pipeline = self.pipeline
        self._sensor_subscriptions.append(self.create_subscription(
            input_message_types(self.params)["camera_info"], topic,
            lambda msg: pipeline.on_camera_info(msg, self._now()), qos))
        self._latched_camera_info = True

    def _on_check(self) -> None:
        self._subscribe_latched_camera_info()
        now = self._now()
        job = self.pipeline.on_timer(now)
        if job is not None and self._worker is not None:
            self._worker.submit(job)
        if self.pipeline.health_changed(now):
            self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        """The sensors' and the model's statuses while active, and the lifecycle state always."""
        now = self._now()
        if self.pipeline is not None and self.lifecycle_state == "active":
            array = self.pipeline.diagnostics(now)
        else:
            array = DiagnosticArray(header=Header(stamp=seconds_to_stamp(max(now, 0.0))))
        values = {"backend": self.params["backend"], "last_refused_transition": self._refused or "none"}
        array.status.append(lifecycle_status(self.lifecycle_state, self.get_fully_qualified_name(), values))
        prefix = status_prefix(self.get_fully_qualified_name())
        for status in array.status:
            status.name = prefix + status.name.removeprefix(DIAGNOSTIC_PREFIX)
        self._diagnostics_pub.publish(array)

    # ------------------------------------------------------------------ inference worker thread

    def _process(self, job: FrameJob) -> None:
        """Segment one frame and publish its outputs; a failure is counted and logged, never raised."""
        pipeline = self.pipeline
        outputs = self._outputs
        try:
            output = pipeline.process(job, with_color=outputs["segmentation_color"].get_subscription_count() > 0,
                                      with_overlay=outputs["overlay"].get_subscription_count() > 0,
                                      with_confidence=outputs["confidence"].get_subscription_count() > 0)
            if output is None:
                return
            start = time.perf_counter()
            messages = image_messages(output)  # built outside the lock: a deactivation waits only for publish()
            status = pipeline.sensor_status(output)
            with self._publish_lock:
                if not self._publishing or job.generation != pipeline.generation:  # the clock jumped back meanwhile
                    return
                for name, message in messages.items():
                    outputs[name].publish(message)
                latency_ms = (self._now() - output.job.newest_input_stamp) * 1e3
                outputs["latency_ms"].publish(Float32(data=float(latency_ms)))
                outputs["sensor_status"].publish(status)
            pipeline.statistics.record_published(output, latency_ms, (time.perf_counter() - start) * 1e3, self._now())
        except Exception as error:  # the worker must survive any single frame
            pipeline.statistics.count_failure(error, self._now())
            self.get_logger().error(f"frame failed: {type(error).__name__}: {error}",
                                    throttle_duration_sec=FAILURE_LOG_THROTTLE_S)

    def destroy_node(self) -> None:
        """Stop the worker (nothing is published afterwards), then destroy the node."""
        self._stop_activity()
        self._join_finishing_worker()
        super().destroy_node()
