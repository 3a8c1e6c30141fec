"""lisa_ros.runtime.launch_config (launch arguments -> parameters, remappings, namespace) and the launch file."""

from pathlib import Path

import pytest

from lisa_ros.runtime.launch_config import (
    LAUNCH_ARGUMENTS,
    Camera,
    cameras_argument,
    check_known,
    launch_configuration,
    launch_plan,
    load_params_file,
    parse_cameras_argument,
    rviz_config,
)
from lisa_ros.runtime.parameters import PARAMETERS, defaults

ROOT = Path(__file__).resolve().parents[2]


def test_arguments_mirror_parameters():
    names = [name for name, _, _ in LAUNCH_ARGUMENTS]
    extra = ["namespace", "params_file", "image", "depth", "camera_info", "camera_pose", "command"]
    extra += ["use_sim_time", "autostart", "respawn", "respawn_delay", "rviz", "cameras"]
    extra += ["voice", "audio_source", "audio_path", "say"]
    assert names == [p.name for p in PARAMETERS] + extra
    assert all(isinstance(default, str) and description for _, default, description in LAUNCH_ARGUMENTS)
    described = {name: text for name, _, text in LAUNCH_ARGUMENTS}
    assert "one of 'auto', 'cpu', 'cuda'" in described["device"] and "default 'auto'" in described["device"]
    assert "default 'true'" in described["publish_overlay"]


def test_defaults():
    assert launch_configuration({}) == (defaults(), [], "/lisa")
    as_launch_gives_them = {name: default for name, default, _ in LAUNCH_ARGUMENTS}
    assert launch_configuration(as_launch_gives_them) == (defaults(), [], "/lisa")
    plan = launch_plan(as_launch_gives_them)
    assert (plan.autostart, plan.respawn, plan.rviz, plan.cameras, plan.speech, plan.say) == (
        True, False, False, [], None, False)
    assert plan.node_names == ["/lisa/lisa"] and plan.node_arguments == []


def test_overrides_are_typed():
    parameters, remappings, namespace = launch_configuration(
        {
            "model_path": "/models/LISA-7B",
            "device": "cuda",
            "precision": "bf16",
            "max_new_tokens": "256",
            "max_image_age": "2.5",
            "queue_size": " 8 ",
            "publish_overlay": "false",
            "use_compressed_image": "True",
            "namespace": "robot1/perception",
        }
    )
    expected = defaults() | {
        "model_path": "/models/LISA-7B",
        "device": "cuda",
        "precision": "bf16",
        "max_new_tokens": 256,
        "max_image_age": 2.5,
        "queue_size": 8,
        "publish_overlay": False,
        "use_compressed_image": True,
    }
    assert [(k, type(v), v) for k, v in parameters.items()] == [(k, type(v), v) for k, v in expected.items()]
    assert (remappings, namespace) == ([], "/robot1/perception")
    assert launch_configuration({"max_image_age": "3"})[0]["max_image_age"] == 3.0


def test_remap_arguments_remap_the_relative_input_topics():
    _, remappings, _ = launch_configuration({"image": "/camera/color/image_raw", "command": "/speech/transcript"})
    assert remappings == [("image", "/camera/color/image_raw"), ("command", "/speech/transcript")]
    _, remappings, _ = launch_configuration(
        {"image": "/cam/compressed", "depth": "/cam/depth", "camera_info": "/cam/info", "camera_pose": "/cam/pose"}
    )
    assert remappings == [
        ("image", "/cam/compressed"),
        ("depth", "/cam/depth"),
        ("camera_info", "/cam/info"),
        ("camera_pose", "/cam/pose"),
    ]


def test_compressed_images_follow_image_transport_names():
    compressed = {"use_compressed_image": "true"}
    _, remappings, _ = launch_configuration(compressed | {"image": "/camera/color/image_raw"})
    assert remappings == [("image/compressed", "/camera/color/image_raw/compressed")]
    _, remappings, _ = launch_configuration(compressed | {"image": "/camera/color/image_raw/compressed"})
    assert remappings == [("image/compressed", "/camera/color/image_raw/compressed")]
    plan = launch_plan(compressed | {"cameras": "[{name: front, image: /front/image_raw}]"})
    assert plan.cameras[0].remappings == (("image/compressed", "/front/image_raw/compressed"),)


def test_topic_parameters_are_gone():
    """Remapping is the one way to move a topic: the old *_topic parameters are unknown arguments."""
    for name in ("image_topic", "depth_topic", "camera_info_topic", "command_topic", "pose_topic"):
        with pytest.raises(ValueError, match="unknown launch argument"):
            launch_configuration({name: "x"})


@pytest.mark.parametrize(
    "arguments,match",
    [
        ({"modle_path": "x"}, "unknown launch argument.*modle_path"),
        ({"foo": "bar"}, "unknown launch argument.*foo; valid arguments: .*audio_path.*use_sim_time"),
        ({"use_sim_time": "yes"}, "use_sim_time must be true or false"),
        ({"namespace": "robot 1"}, "'robot 1' is not a valid ROS name"),
        ({"publish_overlay": "yes"}, "publish_overlay must be of type bool, got 'yes'"),
        ({"max_new_tokens": "1.5"}, "max_new_tokens must be of type int"),
        ({"max_new_tokens": "0"}, r"in \[1, 4096\]"),
        ({"max_image_age": "soon"}, "max_image_age must be of type float"),
        ({"max_image_age": "nan"}, "finite"),
        ({"device": "gpu"}, "one of 'auto', 'cpu', 'cuda'"),
        ({"queue_size": 8}, "must be a string"),
    ],
)
def test_bad_arguments(arguments, match):
    with pytest.raises(ValueError, match=match):
        launch_configuration(arguments)


def _write(tmp_path, text, name="params.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_params_file_then_arguments(tmp_path):
    path = _write(tmp_path, "/**:\n  ros__parameters:\n    device: cpu\n    max_new_tokens: 64\n    max_image_age: 2\n")
    parameters, _, _ = launch_configuration({"params_file": path})
    assert parameters == defaults() | {"device": "cpu", "max_new_tokens": 64, "max_image_age": 2.0}
    parameters, _, _ = launch_configuration({"params_file": path, "max_new_tokens": "32", "device": ""})
    assert (parameters["device"], parameters["max_new_tokens"]) == ("cpu", 32)


def test_params_file_node_keys(tmp_path):
    text = (
        "/**:\n  ros__parameters:\n    queue_size: 2\n"
        "/other/node:\n  ros__parameters:\n    queue_size: 3\n"
        "/**/lisa:\n  ros__parameters:\n    queue_size: 4\n    device: cpu\n"
        "/robot/lisa:\n  ros__parameters:\n    queue_size: 5\n"
    )
    path = _write(tmp_path, text)
    assert load_params_file(path, "lisa") == {"queue_size": 4, "device": "cpu"}
    assert load_params_file(path, "/robot") == {"queue_size": 5, "device": "cpu"}
    one_level = _write(tmp_path, "/*/lisa:\n  ros__parameters:\n    queue_size: 6\n", "one.yaml")
    assert load_params_file(one_level, "robot") == {"queue_size": 6}
    root = _write(tmp_path, "lisa:\n  ros__parameters:\n    queue_size: 7\n", "root.yaml")
    assert load_params_file(root, "") == {"queue_size": 7}


def test_shipped_config_is_a_valid_params_file():
    assert launch_configuration({"params_file": str(ROOT / "config" / "lisa.yaml")})[0] == defaults()


@pytest.mark.parametrize(
    "text,match",
    [
        ("/**:\n  ros__parameters:\n    max_tokens: 5\n", "unknown parameter 'max_tokens'"),
        ("/**:\n  ros__parameters:\n    queue_size: 0\n", r"queue_size must be in \[1, 1024\]"),
        ("/**:\n  ros__parameters:\n    device: 1\n", "device must be of type str"),
        ("/other:\n  ros__parameters:\n    device: cpu\n", "no ros__parameters entry for node /lisa/lisa"),
        ("/**:\n  device: cpu\n", "has no ros__parameters"),
        ("/**: [unclosed\n", "cannot read params_file"),
    ],
)
def test_bad_params_files(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        launch_configuration({"params_file": _write(tmp_path, text)})


def test_missing_params_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read params_file"):
        launch_configuration({"params_file": str(tmp_path / "missing.yaml")})


class _Recorded:
    """A launch/launch_ros class stand-in that records how the launch file builds it."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __repr__(self):
        return f"{type(self).__name__}({self.kwargs})"


def _standins(share: Path) -> dict:
    """Modules the launch file imports, as recording stand-ins (launch and launch_ros are not on PyPI)."""
    import types

    names = {
        "launch": ["LaunchDescription"],
        "launch.actions": ["DeclareLaunchArgument", "EmitEvent", "OpaqueFunction", "RegisterEventHandler"],
        "launch.event_handlers": ["OnProcessStart"],
        "launch.events": [],
        "launch.substitutions": [],
        "launch_ros": [],
        "launch_ros.actions": ["LifecycleNode", "Node"],
        "launch_ros.event_handlers": ["OnStateTransition"],
        "launch_ros.events": [],
        "launch_ros.events.lifecycle": ["ChangeState"],
        "launch_ros.parameter_descriptions": ["ParameterValue"],
        "launch_ros.ros_adapters": [],
        "lifecycle_msgs": [],
        "lifecycle_msgs.msg": [],
        "lifecycle_msgs.srv": ["ChangeState"],
        "ament_index_python": [],
        "ament_index_python.packages": [],
    }
    modules = {}
    for name, classes in names.items():
        module = types.ModuleType(name)
        for cls in classes:
            setattr(module, cls, type(cls, (_Recorded,), {}))
        modules[name] = module

    class LaunchConfiguration(_Recorded):
        def perform(self, context):
            return context.values.get(self.args[0], context.defaults[self.args[0]])

    modules["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    modules["launch.events"].matches_action = lambda action: ("matches", action)
    modules["launch.logging"] = types.ModuleType("launch.logging")
    modules["launch.logging"].get_logger = lambda name: None
    modules["launch"].logging = modules["launch.logging"]
    modules["launch_ros.ros_adapters"].get_ros_node = lambda context: None
    modules["lifecycle_msgs.msg"].Transition = types.SimpleNamespace(TRANSITION_CONFIGURE=1, TRANSITION_ACTIVATE=3)
    modules["ament_index_python.packages"].get_package_share_directory = lambda package: str(share)
    return modules


def _run_launch_file(monkeypatch, values: dict, argv=()) -> list:
    """The actions lisa.launch.py starts for `values` (launch argument values; argv: the command line)."""
    import importlib.util
    import sys
    import types

    for name, module in _standins(ROOT).items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("lisa_launch_under_test", ROOT / "launch" / "lisa.launch.py")
    launch_file = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch_file)
    description = launch_file.generate_launch_description()
    entities = description.args[0]
    assert [entity.args[0] for entity in entities[:-1]] == [name for name, _, _ in LAUNCH_ARGUMENTS]
    start = entities[-1].kwargs["function"]
    defaults_ = {name: default for name, default, _ in LAUNCH_ARGUMENTS}
    context = types.SimpleNamespace(values=values, defaults=defaults_, argv=list(argv))
    return start(context)


def _kinds(actions) -> list[str]:
    return [type(action).__name__ for action in actions]


def test_launch_file_starts_one_lifecycle_node_and_drives_its_transitions(monkeypatch):
    actions = _run_launch_file(monkeypatch, {"namespace": "/", "use_sim_time": "true"}, ["namespace:=/"])
    assert _kinds(actions) == ["LifecycleNode", "RegisterEventHandler", "RegisterEventHandler"]
    node = actions[0].kwargs
    assert (node["executable"], node["name"], node["namespace"]) == ("lisa_node", "lisa", "/")  # '/': the root
    assert (node["respawn"], node["remappings"]) == (False, [])
    assert node["parameters"][0]["use_sim_time"] is True
    configure = actions[1].args[0]  # OnProcessStart: configure on every start (respawns too)
    assert type(configure).__name__ == "OnProcessStart" and configure.kwargs["target_action"] is actions[0]
    assert configure.kwargs["on_start"][0].kwargs["event"].kwargs["transition_id"] == 1
    activate = actions[2].args[0]
    assert (activate.kwargs["start_state"], activate.kwargs["goal_state"]) == ("configuring", "inactive")
    assert activate.kwargs["entities"][0].kwargs["event"].kwargs["transition_id"] == 3


def test_launch_file_without_autostart_leaves_the_transitions_to_others(monkeypatch):
    actions = _run_launch_file(monkeypatch, {"autostart": "false", "respawn": "true", "respawn_delay": "0.5"})
    assert _kinds(actions) == ["LifecycleNode"]
    assert (actions[0].kwargs["respawn"], actions[0].kwargs["respawn_delay"]) == (True, 0.5)


def test_launch_file_rejects_unknown_command_line_arguments(monkeypatch):
    with pytest.raises(ValueError, match="unknown launch argument.*foo; valid arguments: .*use_sim_time"):
        _run_launch_file(monkeypatch, {}, ["foo:=bar", "device:=cpu"])


def test_launch_file_voice_say_and_rviz(monkeypatch, tmp_path):
    values = {"voice": "true", "command": "/heard", "rviz": "true", "namespace": "robot", "target_frame": "map",
              "say": "true"}  # fmt: skip
    actions = _run_launch_file(monkeypatch, values)
    assert _kinds(actions) == ["LifecycleNode", "RegisterEventHandler", "RegisterEventHandler"] * 2 + ["Node"] * 2
    speech = actions[3].kwargs
    assert (speech["executable"], speech["name"], speech["namespace"]) == ("speech_node", "speech", "/robot")
    assert speech["remappings"] == [("command", "/heard")]
    say = actions[6].kwargs  # in the same namespace: lisa's `explanation` in, speech's `mute` out
    assert (say["executable"], say["name"], say["namespace"]) == ("say_node", "say", "/robot")
    rviz = actions[-1].kwargs
    assert (rviz["package"], rviz["arguments"][0]) == ("rviz2", "-d")
    text = Path(rviz["arguments"][1]).read_text()
    Path(rviz["arguments"][1]).unlink()
    assert "/robot/overlay" in text and "/lisa/overlay" not in text and "Fixed Frame: map" in text


def test_launch_file_runs_cameras_in_one_process(monkeypatch):
    actions = _run_launch_file(monkeypatch, {"cameras": "[front, {name: wrist, image: /wrist/image}]"})
    assert _kinds(actions) == ["Node", "RegisterEventHandler"]
    process = actions[0].kwargs
    assert "name" not in process and "namespace" not in process  # they would rename every node of the process
    assert process["arguments"][0] == "--cameras"
    cameras = parse_cameras_argument(process["arguments"][1])
    assert cameras == [Camera("front", "/lisa/front"), Camera("wrist", "/lisa/wrist", (("image", "/wrist/image"),))]
    assert type(actions[1].args[0]).__name__ == "OnProcessStart"


def test_launch_description_through_launch_api():
    """With the real launch and launch_ros (a ROS 2 install; not on PyPI): the description's
    arguments, and the actions the default start creates."""
    launch = pytest.importorskip("launch", reason="launch is not installed (ROS 2 install only)")
    pytest.importorskip("launch_ros", reason="launch_ros is not installed (ROS 2 install only)")
    import importlib.util

    spec = importlib.util.spec_from_file_location("lisa_launch_real", ROOT / "launch" / "lisa.launch.py")
    launch_file = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch_file)
    description = launch_file.generate_launch_description()
    assert [a.name for a in description.get_launch_arguments()] == [name for name, _, _ in LAUNCH_ARGUMENTS]
    context = launch.LaunchContext()
    for entity in description.entities[:-1]:
        entity.visit(context)
    context.launch_configurations["namespace"] = "/"
    actions = description.entities[-1].execute(context)
    from launch_ros.actions import LifecycleNode

    assert isinstance(actions[0], LifecycleNode)
    context.launch_configurations["cameras"] = "front,wrist"
    assert [type(a).__name__ for a in description.entities[-1].execute(context)] == ["Node", "RegisterEventHandler"]


def test_plan_cameras():
    plan = launch_plan({"cameras": "front, wrist", "namespace": "/", "autostart": "true"})
    assert plan.cameras == [Camera("front", "/front"), Camera("wrist", "/wrist")]
    assert plan.node_names == ["/front/lisa", "/wrist/lisa"] and plan.remappings == []
    assert parse_cameras_argument(plan.node_arguments[1]) == plan.cameras
    assert parse_cameras_argument(cameras_argument(plan.cameras)) == plan.cameras
    yaml_list = launch_plan({"cameras": "[{name: front, depth: /f/depth, camera_info: /f/info}]"})
    assert yaml_list.cameras == [Camera("front", "/lisa/front", (("depth", "/f/depth"), ("camera_info", "/f/info")))]


@pytest.mark.parametrize(
    "arguments,match",
    [
        ({"cameras": "front,front"}, "given twice"),
        ({"cameras": "front,2nd"}, "'2nd' is not a valid ROS name"),
        ({"cameras": "[{name: front, imag: /x}]"}, "unknown key.*imag"),
        ({"cameras": "[front"}, "not a YAML list"),
        ({"cameras": "front", "image": "/x"}, "remap one node's inputs; with cameras"),
        ({"cameras": "front", "voice": "true"}, "voice:=true and say:=true work with one camera"),
        ({"cameras": "front", "say": "true"}, "voice:=true and say:=true work with one camera"),
        ({"say": "yes"}, "say must be true or false"),
        ({"autostart": "maybe"}, "autostart must be true or false"),
        ({"respawn_delay": "soon"}, "respawn_delay must be a number"),
        ({"respawn_delay": "-1"}, r"respawn_delay must be in \[0, 3600\]"),
        ({"rviz": "1"}, "rviz must be true or false"),
    ],
)
def test_bad_plan_arguments(arguments, match):
    with pytest.raises(ValueError, match=match):
        launch_plan(arguments)


def test_cameras_argument_by_hand():
    assert parse_cameras_argument("front, wrist", "/lisa") == [
        Camera("front", "/lisa/front"),
        Camera("wrist", "/lisa/wrist"),
    ]
    assert parse_cameras_argument("front", "/") == [Camera("front", "/front")]


def test_cameras_argument_is_checked_on_the_node_side():
    for text in ("", "[]", "{}", '[{"name": "a"}]', '[{"name": "a", "namespace": "/a", "remappings": []}] * 2', "a,a"):
        with pytest.raises(ValueError, match="cameras"):
            parse_cameras_argument(text)
    twice = '[{"name": "a", "namespace": "/a", "remappings": []}, {"name": "b", "namespace": "/a", "remappings": []}]'
    with pytest.raises(ValueError, match="distinct namespaces"):
        parse_cameras_argument(twice)


def test_check_known_lists_the_valid_arguments():
    check_known(["device", "namespace", "use_sim_time", "cameras"])
    valid = "valid arguments: audio_path, audio_source"
    with pytest.raises(ValueError, match=f"unknown launch argument.*bar, foo; {valid}"):
        check_known(["foo", "bar", "device"])


def test_use_sim_time_from_params_file_or_argument(tmp_path):
    path = _write(tmp_path, "/**:\n  ros__parameters:\n    use_sim_time: true\n    device: cpu\n")
    assert launch_configuration({"params_file": path})[0]["use_sim_time"] is True
    assert launch_configuration({"params_file": path, "use_sim_time": "false"})[0]["use_sim_time"] is False
    assert "use_sim_time" not in launch_configuration({})[0]
    bad = _write(tmp_path, "/**:\n  ros__parameters:\n    use_sim_time: 1\n", "bad.yaml")
    with pytest.raises(ValueError, match="use_sim_time must be true or false"):
        launch_configuration({"params_file": bad})


def test_rviz_config_follows_the_namespace_and_frame():
    template = (ROOT / "config" / "lisa.rviz").read_text()
    assert rviz_config(template, "/lisa", "camera_color_optical_frame") == template  # written for the defaults
    moved = rviz_config(template, "/robot/front", "map")
    assert "/robot/front/overlay" in moved and "/robot/front/target_cloud" in moved and "/lisa/" not in moved
    assert "Fixed Frame: map" in moved
    root = rviz_config(template, "", "map")
    assert "Value: /overlay" in root


def test_voice_arguments_start_the_speech_node():
    from lisa_ros.runtime.launch_config import speech_configuration

    assert speech_configuration({}) is None and speech_configuration({"voice": "false"}) is None
    assert speech_configuration({"voice": "true"}) == {"source": "microphone", "audio_path": ""}
    files = {"voice": "True", "audio_source": "file", "audio_path": "/data/commands"}
    assert speech_configuration(files) == {"source": "file", "audio_path": "/data/commands"}
    bad_cases = (
        ({"voice": "yes"}, "true or false"),
        ({"voice": "true", "audio_source": "mic"}, "one of microphone, file, topic, transcripts"),
        ({"voice": "true", "audio_source": "file"}, "audio_path"),
    )
    for bad, match in bad_cases:
        with pytest.raises(ValueError, match=match):
            speech_configuration(bad)
    assert launch_configuration({"voice": "true"}) == (defaults(), [], "/lisa")  # lisa_node's own: unchanged
    plan = launch_plan({"voice": "true", "command": "/speech/heard"})
    assert plan.speech_node_name == "/lisa/speech" and plan.speech_remappings == [("command", "/speech/heard")]


def test_shipped_views_show_the_nodes_outputs():
    import json

    import yaml

    from lisa_ros.runtime.detection_fields import DETECTION_OUTPUT_TYPES
    from lisa_ros.runtime.message_fields import OUTPUT_TYPES

    outputs = {f"/lisa/{name}" for name in [*OUTPUT_TYPES, *DETECTION_OUTPUT_TYPES]}
    rviz = yaml.safe_load((ROOT / "config" / "lisa.rviz").read_text())
    displays = {d["Class"]: d for d in rviz["Visualization Manager"]["Displays"]}
    assert {"rviz_default_plugins/TF", "rviz_default_plugins/Grid"} <= set(displays)
    kinds = ("Image", "PointCloud2", "MarkerArray")
    topics = {displays[f"rviz_default_plugins/{kind}"]["Topic"]["Value"] for kind in kinds}
    assert topics == {"/lisa/overlay", "/lisa/target_cloud", "/lisa/markers"}
    # The node's outputs are volatile: a transient-local display would get nothing.
    assert all(displays[k]["Topic"]["Durability Policy"] == "Volatile" for k in displays if "Topic" in displays[k])
    foxglove = json.loads((ROOT / "config" / "lisa.foxglove.json").read_text())
    panels = foxglove["configById"]
    shown = {panels["Image!lisa-overlay"]["imageMode"]["imageTopic"], *panels["3D!lisa-regions"]["topics"]}
    shown |= {panel["topicPath"].split(".")[0] for key, panel in panels.items() if key.startswith("RawMessages")}
    assert shown <= outputs and {"/lisa/overlay", "/lisa/target_cloud", "/lisa/markers"} <= shown

    def leaves(node):
        return [node] if isinstance(node, str) else leaves(node["first"]) + leaves(node["second"])

    assert sorted(leaves(foxglove["layout"])) == sorted(panels)
