"""Launch arguments -> what launch/lisa.launch.py starts, without ROS.

launch/lisa.launch.py declares LAUNCH_ARGUMENTS and hands their values to `launch_plan`
(the nodes, their parameters, remappings and namespaces, lifecycle and respawn settings,
RViz); everything that can go wrong happens here, where tests reach it.

Multiple cameras (`cameras:=front,wrist`) run as ONE lisa_node process with one node per
camera sharing one loaded model. The process learns its cameras from a command-line
argument before `--ros-args`: `lisa_node --cameras '<JSON>'`, the JSON list
`cameras_argument` writes and `parse_cameras_argument` reads: one object per camera with
"name", "namespace" (absolute) and "remappings" ([[from, to], ...], that node's only).
"""

import json
import re
from dataclasses import dataclass, field

import yaml

from .parameters import PARAMETERS, defaults, spec, validate

NODE_NAME = "lisa"
SPEECH_NODE_NAME = "speech"
DEFAULT_NAMESPACE = "lisa"
SPEECH_SOURCES = ("microphone", "file", "topic", "transcripts")  # speech_node's `source` values
# The node's input topics with a launch argument that remaps them (remapping moves any topic:
# the others through launch_ros or --ros-args -r).
REMAP_ARGUMENTS = {
    "image": "sensor_msgs/Image; with use_compressed_image the base topic, whose /compressed is read",
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
    (
        "namespace",
        DEFAULT_NAMESPACE,
        "namespace of the node, its topics and services; '/': the root namespace (ros2 launch refuses an empty value)",
    ),
    ("params_file", "", "ROS 2 parameters file (like config/lisa.yaml), loaded before the parameter arguments"),
    *(
        (topic, "", f"topic to remap the node's {topic} input ({kind}) to; empty: no remapping")
        for topic, kind in REMAP_ARGUMENTS.items()
    ),
    ("use_sim_time", "", "true: the nodes use /clock (bag replay with --clock); empty: from params_file, else false"),
    ("autostart", "true", "true: launch configures and activates the nodes; false: they wait unconfigured"),
    ("respawn", "false", "true: restart lisa_node (and speech_node) when it exits"),
    ("respawn_delay", "2.0", "seconds to wait before a respawn"),
    ("rviz", "false", "true: also start rviz2 with config/lisa.rviz"),
    (
        "cameras",
        "",
        "one node per camera in one process sharing one model: 'front,wrist', or a YAML list of names or of "
        "{name: front, image: /topic, depth: ..., camera_info: ..., camera_pose: ..., command: ...}; "
        "topics under <namespace>/<name>; empty: one node",
    ),
    ("voice", "false", "true: also start speech_node, speech from audio_source to the command topic"),
    ("audio_source", "microphone", "speech_node's source: " + ", ".join(SPEECH_SOURCES) + " (see docs/ros.md)"),
    ("audio_path", "", "speech_node's WAV/FLAC file or folder, with audio_source file"),
    ("say", "false", "true: also start say_node: speak each explanation (espeak-ng), speech_node muted meanwhile"),
]
_KNOWN = {name for name, _, _ in LAUNCH_ARGUMENTS}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # one token of a ROS name


def speech_configuration(arguments: dict[str, str]) -> dict | None:
    """speech_node's parameters when the `voice` argument is true, else None; ValueError for bad values."""
    voice = arguments.get("voice", "false").strip().lower()
    if voice not in ("true", "false"):
        raise ValueError(f"launch argument voice must be true or false, got {arguments['voice']!r}")
    if voice == "false":
        return None
    source = arguments.get("audio_source", "microphone") or "microphone"
    if source not in SPEECH_SOURCES:
        raise ValueError(f"launch argument audio_source must be one of {', '.join(SPEECH_SOURCES)}, got {source!r}")
    if source == "file" and not arguments.get("audio_path"):
        raise ValueError("launch argument audio_path is needed with audio_source:=file")
    return {"source": source, "audio_path": arguments.get("audio_path", "")}


def check_known(names) -> None:
    """ValueError naming the unknown launch arguments among `names`, with the list of valid ones."""
    unknown = sorted(set(names) - _KNOWN)
    if unknown:
        raise ValueError(
            f"unknown launch argument(s) {', '.join(unknown)}; valid arguments: {', '.join(sorted(_KNOWN))}"
        )


def normalize_namespace(text: str) -> str:
    """A namespace argument as an absolute namespace ("/" and "" are the root: ""); ValueError for a bad name."""
    parts = [part for part in text.strip().split("/") if part]
    for part in parts:
        if not _NAME.fullmatch(part):
            raise ValueError(f"launch argument namespace {text!r}: {part!r} is not a valid ROS name")
    return "".join("/" + part for part in parts)


def launch_configuration(arguments: dict[str, str]) -> tuple[dict, list[tuple[str, str]], str]:
    """Map launch argument values to what launch_ros needs to start lisa_node.

    Arguments:
      arguments (dict[str, str]): launch argument values, as launch gives them (all
        strings); missing or empty parameter arguments are not set.

    Returns:
      (parameters, remappings, namespace): every parameter typed as PARAMETERS
        declares it (defaults, then params_file values, then arguments; use_sim_time only
        when given); remappings such as [("image", "/camera/color/image_raw")]; the node's
        namespace, absolute ("/lisa"), "" for the root.

    Raises ValueError for an unknown argument, a value that does not parse or is out
    of range, or an unreadable params_file.
    """
    check_known(arguments)
    for name, value in arguments.items():
        if not isinstance(value, str):
            raise ValueError(f"launch argument {name} must be a string, got {type(value).__name__} {value!r}")
    namespace = normalize_namespace(arguments.get("namespace", DEFAULT_NAMESPACE))
    parameters = defaults()
    if arguments.get("params_file"):
        parameters.update(load_params_file(arguments["params_file"], namespace))
    for parameter in PARAMETERS:
        if arguments.get(parameter.name, ""):
            parameters[parameter.name] = parse_argument(parameter.name, arguments[parameter.name])
    if arguments.get("use_sim_time", ""):
        parameters["use_sim_time"] = parse_bool("use_sim_time", arguments["use_sim_time"])
    remappings = input_remappings(arguments, parameters["use_compressed_image"])
    return parameters, remappings, namespace


def input_remappings(topics: dict, compressed: bool) -> list[tuple[str, str]]:
    """The node's input remappings of REMAP_ARGUMENTS-named `topics` ({"image": "/camera/color/image_raw", ...}).

    With compressed images the node reads `image/compressed` (image_transport's name), so
    the image is given as the camera's base topic and its `/compressed` is remapped, as
    image_transport does (a topic already ending in /compressed is taken as it is).
    """
    remappings = []
    for topic in REMAP_ARGUMENTS:
        target = str(topics.get(topic) or "")
        if not target:
            continue
        if topic == "image" and compressed:
            target = target if target.rstrip("/").endswith("/compressed") else target.rstrip("/") + "/compressed"
            topic = "image/compressed"
        remappings.append((topic, target))
    return remappings


def parse_bool(name: str, text: str) -> bool:
    """A launch argument "true"/"false" (any case) as a bool; ValueError otherwise."""
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"launch argument {name} must be true or false, got {text!r}")
    return value == "true"


@dataclass(frozen=True)
class Camera:
    """One lisa_node node of a multi-camera process: its name, absolute namespace and own remappings."""

    name: str
    namespace: str
    remappings: tuple[tuple[str, str], ...] = ()


@dataclass
class LaunchPlan:
    """What lisa.launch.py starts.

    parameters / remappings / namespace: lisa_node's (launch_configuration's); with cameras,
      the parameters apply to every camera's node and `remappings` is empty.
    cameras: one Camera per node of a multi-camera process; empty: one node `NODE_NAME` in `namespace`.
    node_names: the lifecycle nodes' full names, the ones `autostart` configures and activates.
    speech: speech_node's parameters (voice:=true), else None; its `command` goes to lisa_node's.
    say: start say_node (say:=true) beside lisa_node: explanations spoken, `mute` raised meanwhile.
    """

    parameters: dict
    remappings: list[tuple[str, str]]
    namespace: str
    cameras: list[Camera] = field(default_factory=list)
    autostart: bool = True
    respawn: bool = False
    respawn_delay: float = 2.0
    rviz: bool = False
    speech: dict | None = None
    say: bool = False

    @property
    def node_names(self) -> list[str]:
        if self.cameras:
            return [f"{camera.namespace}/{NODE_NAME}" for camera in self.cameras]
        return [f"{self.namespace}/{NODE_NAME}"]

    @property
    def speech_node_name(self) -> str:
        return f"{self.namespace}/{SPEECH_NODE_NAME}"

    @property
    def speech_remappings(self) -> list[tuple[str, str]]:
        """speech_node's `command` onto lisa_node's (its remapping, when there is one)."""
        return [(topic, target) for topic, target in self.remappings if topic == "command"]

    @property
    def node_arguments(self) -> list[str]:
        """lisa_node's command-line arguments before --ros-args."""
        return ["--cameras", cameras_argument(self.cameras)] if self.cameras else []


def launch_plan(arguments: dict[str, str]) -> LaunchPlan:
    """Map launch argument values (as launch gives them: strings) to a LaunchPlan.

    Raises ValueError for anything launch_configuration refuses, a bad autostart, respawn,
    respawn_delay, rviz or cameras value, remapping arguments together with cameras (remap
    per camera in the YAML list instead), or voice:=true with cameras.
    """
    parameters, remappings, namespace = launch_configuration(arguments)
    cameras = parse_cameras(arguments.get("cameras", ""), namespace, parameters["use_compressed_image"])
    if cameras and remappings:
        names = ", ".join(topic for topic, _ in remappings)
        raise ValueError(
            f"launch arguments {names} remap one node's inputs; with cameras give each camera's topics "
            "in the YAML list: cameras:='[{name: front, image: /front/image}, ...]'"
        )
    speech = speech_configuration(arguments)
    say = parse_bool("say", arguments.get("say", "false"))
    if cameras and (speech is not None or say):
        raise ValueError(
            "voice:=true and say:=true work with one camera; start speech_node / say_node on their "
            "own for multiple cameras"
        )
    delay_text = arguments.get("respawn_delay", "2.0")
    try:
        respawn_delay = float(delay_text)
    except ValueError:
        raise ValueError(f"launch argument respawn_delay must be a number of seconds, got {delay_text!r}") from None
    if not 0.0 <= respawn_delay <= 3600.0:
        raise ValueError(f"launch argument respawn_delay must be in [0, 3600] seconds, got {respawn_delay}")
    return LaunchPlan(
        parameters=parameters,
        remappings=remappings,
        namespace=namespace,
        cameras=cameras,
        autostart=parse_bool("autostart", arguments.get("autostart", "true")),
        respawn=parse_bool("respawn", arguments.get("respawn", "false")),
        respawn_delay=respawn_delay,
        rviz=parse_bool("rviz", arguments.get("rviz", "false")),
        speech=speech,
        say=say,
    )


def parse_cameras(text: str, namespace: str, compressed: bool = False) -> list[Camera]:
    """The `cameras` argument: "" (none: one node), "front,wrist", or a YAML list of names or
    of mappings {name, and any of REMAP_ARGUMENTS: topic}. Each camera's namespace is
    `namespace`/name; its remappings as input_remappings makes them (`compressed`: the
    node reads compressed images). ValueError for a bad name, a duplicate, or an unknown key."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            entries = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"launch argument cameras is not a YAML list: {error}") from None
    else:
        entries = [part.strip() for part in text.split(",")]
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"launch argument cameras must be a non-empty list, got {text!r}")
    cameras, seen = [], set()
    for entry in entries:
        entry = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValueError(f"launch argument cameras: each camera is a name or a mapping with a name, got {entry!r}")
        name = entry["name"]
        if not _NAME.fullmatch(name):
            raise ValueError(f"launch argument cameras: {name!r} is not a valid ROS name")
        if name in seen:
            raise ValueError(f"launch argument cameras: camera {name!r} is given twice")
        seen.add(name)
        unknown = sorted(set(entry) - {"name", *REMAP_ARGUMENTS})
        if unknown:
            raise ValueError(
                f"launch argument cameras: camera {name!r} has unknown key(s) {', '.join(unknown)}; "
                f"known: name, {', '.join(REMAP_ARGUMENTS)}"
            )
        remappings = tuple(input_remappings(entry, compressed))
        cameras.append(Camera(name, f"{namespace}/{name}", remappings))
    return cameras


def cameras_argument(cameras: list[Camera]) -> str:
    """lisa_node's `--cameras` value: a JSON list of {"name", "namespace", "remappings"}."""
    return json.dumps(
        [{"name": c.name, "namespace": c.namespace, "remappings": [list(r) for r in c.remappings]} for c in cameras]
    )


def parse_cameras_argument(text: str, base_namespace: str = "") -> list[Camera]:
    """lisa_node's side of `--cameras`: the JSON list cameras_argument writes (the launch file's),
    or plain names "front,wrist" (by hand: each in `base_namespace`/name, no remappings).
    ValueError for anything else."""
    if not text.strip():
        raise ValueError("--cameras needs at least one camera, got ''")
    if not text.strip().startswith("["):
        return parse_cameras(text, normalize_namespace(base_namespace))
    try:
        entries = json.loads(text)
        cameras = [
            Camera(str(e["name"]), str(e["namespace"]), tuple((str(a), str(b)) for a, b in e["remappings"]))
            for e in entries
        ]
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"--cameras must be a JSON list of cameras, got {text!r}: {error}") from None
    if not cameras or len({c.namespace for c in cameras}) != len(cameras):
        raise ValueError(f"--cameras needs at least one camera and distinct namespaces, got {text!r}")
    return cameras


def rviz_config(template: str, namespace: str, fixed_frame: str) -> str:
    """config/lisa.rviz's text for lisa_node in `namespace` (its topics are written for /lisa)
    with `fixed_frame` as RViz's fixed frame."""
    text = re.sub(r"(Value: )/lisa/", lambda m: f"{m.group(1)}{namespace}/", template)
    return re.sub(r"^(\s*Fixed Frame: ).*$", lambda m: m.group(1) + fixed_frame, text, flags=re.M)


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
            if name == "use_sim_time":  # every node's own parameter
                if not isinstance(value, bool):
                    raise ValueError(f"params_file {path!r}: use_sim_time must be true or false, got {value!r}")
                values[name] = value
                continue
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
