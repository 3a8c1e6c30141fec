"""Launch arguments -> lisa_node parameters, remappings and namespace, without ROS.

launch/lisa.launch.py declares LAUNCH_ARGUMENTS and hands their values to
`launch_configuration`; everything that can go wrong happens here, where tests reach it.
"""

import re

import yaml

from .parameters import PARAMETERS, defaults, spec, validate

NODE_NAME = "lisa"
DEFAULT_NAMESPACE = "lisa"
# The node's input topics with a launch argument that remaps them (remapping moves any topic:
# the others through launch_ros or --ros-args -r).
REMAP_ARGUMENTS = {
    "image": "sensor_msgs/Image (or CompressedImage with use_compressed_image)",
    "depth": "sensor_msgs/Image depth registered to the image",
    "camera_info": "sensor_msgs/CameraInfo of the depth image",
    "camera_pose": "geometry_msgs/PoseStamped camera poses (with use_pose_topic)",
    "command": "std_msgs/String commands",
}


def _text(value) -> str:
    """A parameter value as a launch argument string."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _describe(parameter) -> str:
    allowed = f"; {parameter.constraints}" if parameter.constraints else ""
    default = _text(parameter.default)
    return f"{parameter.description}{allowed}; default {default!r}; empty: from params_file, else the default"


# Parameter arguments default to "" (not given), so that a params_file value is not
# overridden by an argument nobody set: launch cannot tell a default from a given value.
LAUNCH_ARGUMENTS: list[tuple[str, str, str]] = [
    *((parameter.name, "", _describe(parameter)) for parameter in PARAMETERS),
    ("namespace", DEFAULT_NAMESPACE, "namespace of the node, its topics and services; empty: the root namespace"),
    ("params_file", "", "ROS 2 parameters file (like config/lisa.yaml), loaded before the parameter arguments"),
    *(
        (topic, "", f"topic to remap the node's {topic} input ({kind}) to; empty: no remapping")
        for topic, kind in REMAP_ARGUMENTS.items()
    ),
    ("voice", "false", "true: also start speech_node, speech from audio_source to the command topic"),
    ("audio_source", "microphone", "speech_node's audio: microphone (the default device) or file (audio_path)"),
    ("audio_path", "", "speech_node's WAV/FLAC file or folder, with audio_source file"),
]
_KNOWN = {name for name, _, _ in LAUNCH_ARGUMENTS}


def speech_configuration(arguments: dict[str, str]) -> dict | None:
    """speech_node's parameters when the `voice` argument is true, else None; ValueError for bad values."""
    voice = arguments.get("voice", "false").strip().lower()
    if voice not in ("true", "false"):
        raise ValueError(f"launch argument voice must be true or false, got {arguments['voice']!r}")
    if voice == "false":
        return None
    source = arguments.get("audio_source", "microphone") or "microphone"
    if source not in ("microphone", "file"):
        raise ValueError(f"launch argument audio_source must be microphone or file, got {source!r}")
    if source == "file" and not arguments.get("audio_path"):
        raise ValueError("launch argument audio_path is needed with audio_source:=file")
    return {"source": source, "audio_path": arguments.get("audio_path", "")}


def launch_configuration(arguments: dict[str, str]) -> tuple[dict, list[tuple[str, str]], str]:
    """Map launch argument values to what launch_ros needs to start lisa_node.

    Arguments:
      arguments (dict[str, str]): launch argument values, as launch gives them (all
        strings); missing or empty parameter arguments are not set.

    Returns:
      (parameters, remappings, namespace): every parameter typed as PARAMETERS
        declares it (defaults, then params_file values, then arguments); remappings
        such as [("image", "/camera/color/image_raw")]; the node's namespace.

    Raises ValueError for an unknown argument, a value that does not parse or is out
    of range, or an unreadable params_file.
    """
    unknown = sorted(set(arguments) - _KNOWN)
    if unknown:
        raise ValueError(f"unknown launch argument(s) {', '.join(unknown)}; known: {', '.join(sorted(_KNOWN))}")
    for name, value in arguments.items():
        if not isinstance(value, str):
            raise ValueError(f"launch argument {name} must be a string, got {type(value).__name__} {value!r}")
    namespace = arguments.get("namespace", DEFAULT_NAMESPACE)
    parameters = defaults()
    if arguments.get("params_file"):
        parameters.update(load_params_file(arguments["params_file"], namespace))
    for parameter in PARAMETERS:
        if arguments.get(parameter.name, ""):
            parameters[parameter.name] = parse_argument(parameter.name, arguments[parameter.name])
    remappings = [(topic, arguments[topic]) for topic in REMAP_ARGUMENTS if arguments.get(topic)]
    return parameters, remappings, namespace


def parse_argument(name: str, text: str):
    """A parameter's launch argument string as the parameter's type: "true"/"false", int, float or str."""
    expected = spec(name).type
    try:
        if expected is bool:
            if text.strip().lower() not in ("true", "false"):
                raise ValueError
            value = text.strip().lower() == "true"
        else:
            value = expected(text.strip()) if expected is not str else text
    except ValueError:
        raise ValueError(f"launch argument {name} must be of type {expected.__name__}, got {text!r}") from None
    return validate(name, value)


def load_params_file(path: str, namespace: str = DEFAULT_NAMESPACE, node_name: str = NODE_NAME) -> dict:
    """The lisa_node parameters a ROS 2 parameters file sets, validated.

    Entries apply in file order when their key matches the node's full name
    (`/namespace/node_name`), with ROS's wildcards: "/**" (any), "*" (one name).
    Raises ValueError for an unreadable file, no matching entry, or an unknown or
    invalid parameter.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            content = yaml.safe_load(stream)
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read params_file {path!r}: {error}") from error
    full_name = "/".join(["", *filter(None, namespace.strip("/").split("/")), node_name])
    entries = content.items() if isinstance(content, dict) else ()
    values, matched = {}, False
    for key, entry in entries:
        if not re.fullmatch(_key_pattern(str(key)), full_name):
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("ros__parameters"), dict):
            raise ValueError(f"params_file {path!r}: entry {key!r} has no ros__parameters mapping")
        matched = True
        for name, value in entry["ros__parameters"].items():
            try:
                values[name] = validate(name, value)
            except ValueError as error:
                raise ValueError(f"params_file {path!r}: {error}") from None
    if not matched:
        raise ValueError(f"params_file {path!r} has no ros__parameters entry for node {full_name} (nor '/**')")
    return values


def _key_pattern(key: str) -> str:
    """A regular expression for a params file's node key ("/**", "/*/lisa", "lisa", ...)."""
    key = key if key.startswith("/") else "/" + key
    parts = []
    for token in key.split("/")[1:]:
        parts.append("(/[^/]+)*" if token == "**" else "/" + re.escape(token).replace(r"\*", "[^/]+"))
    return "".join(parts)
