"""lisa_node's parameters in ROS terms: descriptors, and which changes apply while it runs."""

from __future__ import annotations

import sys

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult

from ..runtime.parameters import PARAMETERS, tracking_settings, validate
from ..runtime.regions import GEOMETRY_PARAMETERS

# Parameters that select the model: set them when the node starts.
READ_ONLY = frozenset({"model_path", "vision_tower_path", "device", "precision", "conversation_template"})
# Parameters applied as soon as they are set; the others take effect at the next configure/activate.
TRACKING = frozenset(spec.name for spec in PARAMETERS if spec.name.startswith("tracking"))
LIVE = frozenset(
    {"max_new_tokens", "max_image_age", "max_command_length", "max_image_pixels", "max_image_aspect_ratio"}
    | {"keep_conversation", "publish_overlay", "depth_scale", "short_answer", "pre_encode"}
    | (set(GEOMETRY_PARAMETERS) - {"target_frame"})
    | TRACKING
)
# Read by the node each time they are used: nothing to apply.
READ_WHEN_USED = frozenset({"publish_overlay", "depth_scale"})
NAMES = frozenset(spec.name for spec in PARAMETERS)
_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}


def parameter_descriptor(spec) -> ParameterDescriptor:
    """The ParameterDescriptor of a lisa_ros.runtime.parameters.ParameterSpec."""
    descriptor = ParameterDescriptor(
        name=spec.name,
        type=_TYPES[spec.type],
        description=spec.description,
        additional_constraints=spec.constraints,
        read_only=spec.name in READ_ONLY,
    )
    if spec.type is int and (spec.min is not None or spec.max is not None):
        low = spec.min if spec.min is not None else -(2**63)
        high = spec.max if spec.max is not None else 2**63 - 1
        descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=0)]
    if spec.type is float and (spec.min is not None or spec.max is not None):
        low = spec.min if spec.min is not None else -sys.float_info.max
        high = spec.max if spec.max is not None else sys.float_info.max
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
    return descriptor


def declare_parameters(node) -> None:
    for spec in PARAMETERS:
        node.declare_parameter(spec.name, spec.default, parameter_descriptor(spec))


def apply_parameters(node, pipeline, parameters) -> SetParametersResult:
    """Validate a parameter change and apply the live ones to `pipeline` (None: not configured).

    Other nodes' parameters (use_sim_time, ...) pass through; the non-live ones take effect
    at the next configure/activate.
    """
    ours = [parameter for parameter in parameters if parameter.name in NAMES]
    for parameter in ours:
        try:
            validate(parameter.name, parameter.value)
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
    for parameter in ours:
        if parameter.name not in LIVE:
            if pipeline is not None:
                node.get_logger().info(f"{parameter.name} takes effect at the next configure/activate")
            continue
        if pipeline is None or parameter.name in READ_WHEN_USED:
            continue
        value = validate(parameter.name, parameter.value)
        if parameter.name in ("max_new_tokens", "short_answer"):
            setattr(pipeline.predictor, parameter.name, value)
        elif parameter.name in TRACKING:
            values = {name: node.get_parameter(name).value for name in TRACKING}
            values[parameter.name] = value
            pipeline.tracker.settings = tracking_settings(values)
        else:
            setattr(pipeline, parameter.name, value)
    return SetParametersResult(successful=True)
