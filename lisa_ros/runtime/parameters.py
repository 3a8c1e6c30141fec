"""The lisa_node parameters, declared once: names, defaults, descriptions and ranges.

The node declares them from PARAMETERS, config/lisa.yaml holds the same defaults (a
test checks), and the launch file mirrors them as launch arguments.
"""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter; its type is the type of `default` (bool, int, float or str).

    choices: the allowed values (strings), or None for any.
    min, max: the inclusive range of an int or float parameter, or None for unbounded.
    """

    name: str
    default: bool | int | float | str
    description: str
    choices: tuple[str, ...] | None = None
    min: int | float | None = None
    max: int | float | None = None

    @property
    def type(self) -> type:
        return type(self.default)

    @property
    def constraints(self) -> str:
        """The allowed values in words ("" when any value of the type is allowed)."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(choice) for choice in self.choices)
        if self.min is not None or self.max is not None:
            return f"in [{self.min if self.min is not None else '-inf'}, {self.max if self.max is not None else 'inf'}]"
        return ""


PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        "model_path", "", "LISA checkpoint folder; empty: the built-in demo model (synthetic table scenes only)"
    ),
    ParameterSpec("vision_tower_path", "", "CLIP vision tower folder; empty: the one named in the checkpoint's config"),
    ParameterSpec(
        "device", "auto", "where the model runs; auto: cuda when available, else cpu", ("auto", "cpu", "cuda")
    ),
    ParameterSpec(
        "precision",
        "auto",
        "model weights' precision; auto: bf16 on cuda, fp32 on cpu",
        ("auto", "fp32", "bf16", "fp16", "int8", "int4"),
    ),
    ParameterSpec(
        "conversation_template",
        "",
        "prompt template; empty: the one the model was trained with",
        ("", "llava_v1", "llava_llama_2"),
    ),
    ParameterSpec("max_new_tokens", 128, "most tokens generated per answer", min=1, max=4096),
    ParameterSpec(
        "decode_mode",
        "eager",
        "how each answer token is computed: eager (fastest on a CPU, measured), static (a fixed-size "
        "KV cache), compiled (static, compiled with torch.compile: for CUDA, where it replays as a CUDA graph)",
        ("eager", "static", "compiled"),
    ),
    ParameterSpec(
        "short_answer",
        False,
        "stop generating right after the last [SEG] (no explanation: the first mask and the result come sooner)",
    ),
    ParameterSpec(
        "pre_encode",
        True,
        "encode the newest image (CLIP and SAM) while no command waits, so a command on it starts with "
        "the language model at once",
    ),
    ParameterSpec(
        "use_compressed_image",
        False,
        "subscribe to image/compressed (sensor_msgs/CompressedImage, image_transport's naming) instead of image",
    ),
    ParameterSpec("reliable_inputs", False, "reliable input QoS; false: sensor-data QoS (best effort, depth 1)"),
    ParameterSpec("queue_size", 64, "most commands waiting; more are answered with an error", min=1, max=1024),
    ParameterSpec(
        "max_image_age", 1.0, "seconds an image may be older than a command; 0: any age", min=0.0, max=3600.0
    ),
    ParameterSpec("max_command_length", 1000, "longest command accepted, in characters", min=1, max=100000),
    ParameterSpec(
        "max_image_pixels",
        50_000_000,
        "largest image accepted (height x width); a larger one gets an error result",
        min=1,
        max=50_000_000,
    ),
    ParameterSpec(
        "max_image_aspect_ratio",
        20.0,
        "most elongated image accepted (longer side / shorter side); a 1x30000 strip would cost gigabytes",
        min=1.0,
        max=20.0,
    ),
    ParameterSpec("keep_conversation", True, "answer follow-up commands in the context of earlier ones until a reset"),
    ParameterSpec("publish_overlay", True, "publish overlay, the image with the masks drawn on it (rgb8)"),
    ParameterSpec(
        "publish_compressed",
        False,
        "also publish mask/compressed (png) and overlay/compressed (jpeg), sensor_msgs/CompressedImage "
        "with image_transport's names, for bandwidth-limited links",
    ),
    ParameterSpec(
        "depth_scale",
        1000.0,
        "integer depth units per metre of 16UC1 depth (1000: millimetres)",
        min=0.001,
        max=1000000.0,
    ),
    ParameterSpec("min_depth", 0.1, "metres; nearer depth is ignored", min=0.0, max=1000.0),
    ParameterSpec("max_depth", 10.0, "metres; farther depth is ignored", min=0.0, max=1000.0),
    ParameterSpec(
        "mask_erosion", 2, "pixels eroded off each mask before back-projection (edges bleed background)", min=0, max=100
    ),
    ParameterSpec(
        "max_depth_skew",
        0.05,
        "seconds depth, camera_info and pose stamps may be apart from the image's; 0: any (the nearest)",
        min=0.0,
        max=3600.0,
    ),
    ParameterSpec(
        "target_frame", "", "frame of the 3D regions (through tf2 or camera_pose); empty: the depth camera's frame"
    ),
    ParameterSpec(
        "use_pose_topic",
        False,
        "take camera poses from the camera_pose topic (geometry_msgs/PoseStamped) instead of tf2",
    ),
    ParameterSpec("voxel_size", 0.01, "metres; voxel grid the 3D region is down-sampled on", min=0.001, max=1.0),
    ParameterSpec("tracking", True, "keep each answered target's mask and 3D region alive on every new image"),
    ParameterSpec(
        "tracking_max_rate", 15.0, "most tracked images per second; newer images are skipped", min=0.1, max=1000.0
    ),
    ParameterSpec("tracking_keep_targets", False, "a new command adds its targets instead of replacing the live ones"),
    ParameterSpec("tracking_max_targets", 8, "most live targets; the oldest are dropped first", min=1, max=64),
    ParameterSpec(
        "tracking_min_score",
        0.0,
        "a tracked mask with a lower predicted IoU is not the target; 0: no check (the demo model's IoU head "
        "is untrained; 0.5 suits the released LISA weights)",
        min=0.0,
        max=1.0,
    ),
    ParameterSpec("tracking_min_area", 30, "pixels; a smaller tracked mask is not the target", min=0, max=10**8),
    ParameterSpec(
        "tracking_max_area_change",
        3.0,
        "a tracked mask whose area differs more than this factor from the recent median is not the target",
        min=1.0,
        max=1000.0,
    ),
    ParameterSpec(
        "tracking_max_shift",
        0.25,
        "without 3D: a tracked mask whose box centre jumps more than this fraction of the image diagonal "
        "is not the target",
        min=0.0,
        max=2.0,
    ),
    ParameterSpec(
        "tracking_max_region_distance",
        0.1,
        "metres; a tracked mask whose 3D points' median is farther from the fused target's is lost "
        "(moved, or another object): a re-ask decides",
        min=0.0,
        max=100.0,
    ),
    ParameterSpec(
        "tracking_reask_interval", 0.5, "seconds between re-asks of the command of a lost target", min=0.0, max=3600.0
    ),
    ParameterSpec("tracking_max_reasks", 5, "failed re-asks in a row before a target is dropped", min=1, max=1000),
    ParameterSpec(
        "tracking_expiry", 10.0, "seconds without finding a target before it is dropped", min=0.1, max=86400.0
    ),
    ParameterSpec(
        "tracking_max_views", 20, "views fused into one 3D target; older ones are forgotten", min=1, max=1000
    ),
)

_BY_NAME = {spec.name: spec for spec in PARAMETERS}


def spec(name: str) -> ParameterSpec:
    """The ParameterSpec called `name`; ValueError for an unknown name."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown parameter {name!r}; known: {', '.join(_BY_NAME)}") from None


def defaults() -> dict:
    """{name: default} for every parameter, in declaration order."""
    return {spec.name: spec.default for spec in PARAMETERS}


def tracking_settings(values: dict):
    """The lisa_ros.runtime.tracking.TrackingSettings of parameter values ({name: value}, validated)."""
    from .tracking import TrackingSettings

    return TrackingSettings(
        enabled=values["tracking"],
        **{name.removeprefix("tracking_"): values[name] for name in defaults() if name.startswith("tracking_")},
    )


def validate(name: str, value):
    """Check `value` for parameter `name` and return it (ints are accepted, as floats, by float parameters).

    Raises ValueError for an unknown name, a value of the wrong type, or one outside
    the parameter's choices or range.
    """
    parameter = spec(name)
    expected = parameter.type
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    # bool is a subclass of int, so compare types exactly.
    if type(value) is not expected:
        raise ValueError(f"parameter {name} must be of type {expected.__name__}, got {type(value).__name__} {value!r}")
    if parameter.choices is not None and value not in parameter.choices:
        raise ValueError(f"parameter {name} must be {parameter.constraints}, got {value!r}")
    if expected is float and not math.isfinite(value):
        raise ValueError(f"parameter {name} must be finite, got {value!r}")
    if (parameter.min is not None and value < parameter.min) or (parameter.max is not None and value > parameter.max):
        raise ValueError(f"parameter {name} must be {parameter.constraints}, got {value!r}")
    return value
