"""lisa_ros.runtime.launch_config (launch arguments -> parameters, remappings, namespace) and the launch file."""

import ast
from pathlib import Path

import pytest

from lisa_ros.runtime.launch_config import LAUNCH_ARGUMENTS, launch_configuration, load_params_file
from lisa_ros.runtime.parameters import PARAMETERS, defaults

ROOT = Path(__file__).resolve().parents[2]


def test_arguments_mirror_parameters():
    names = [name for name, _, _ in LAUNCH_ARGUMENTS]
    extra = ["namespace", "params_file", "image", "depth", "camera_info", "camera_pose", "command"]
    extra += ["voice", "audio_source", "audio_path"]
    assert names == [p.name for p in PARAMETERS] + extra
    assert all(isinstance(default, str) and description for _, default, description in LAUNCH_ARGUMENTS)
    described = {name: text for name, _, text in LAUNCH_ARGUMENTS}
    assert "one of 'auto', 'cpu', 'cuda'" in described["device"] and "default 'auto'" in described["device"]
    assert "default 'true'" in described["publish_overlay"]


def test_defaults():
    assert launch_configuration({}) == (defaults(), [], "lisa")
    as_launch_gives_them = {name: default for name, default, _ in LAUNCH_ARGUMENTS}
    assert launch_configuration(as_launch_gives_them) == (defaults(), [], "lisa")


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
    assert (remappings, namespace) == ([], "robot1/perception")
    assert launch_configuration({"max_image_age": "3"})[0]["max_image_age"] == 3.0
    assert launch_configuration({"namespace": ""})[2] == ""


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


def test_topic_parameters_are_gone():
    """Remapping is the one way to move a topic: the old *_topic parameters are unknown arguments."""
    for name in ("image_topic", "depth_topic", "camera_info_topic", "command_topic", "pose_topic"):
        with pytest.raises(ValueError, match="unknown launch argument"):
            launch_configuration({name: "x"})


@pytest.mark.parametrize(
    "arguments,match",
    [
        ({"modle_path": "x"}, "unknown launch argument.*modle_path"),
        ({"use_sim_time": "true"}, "unknown launch argument"),
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


def test_launch_file_is_a_thin_standard_adapter():
    source = (ROOT / "launch" / "lisa.launch.py").read_text()
    tree = ast.parse(compile(source, "lisa.launch.py", "exec", ast.PyCF_ONLY_AST))
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert {"LAUNCH_ARGUMENTS", "launch_configuration", "LifecycleNode", "ChangeState", "OnStateTransition"} <= imported
    assert '"lisa_node"' in source and "TRANSITION_CONFIGURE" in source and "TRANSITION_ACTIVATE" in source
    assert '"speech_node"' in source and "speech_configuration" in imported


def test_voice_arguments_start_the_speech_node():
    from lisa_ros.runtime.launch_config import speech_configuration

    assert speech_configuration({}) is None and speech_configuration({"voice": "false"}) is None
    assert speech_configuration({"voice": "true"}) == {"source": "microphone", "audio_path": ""}
    files = {"voice": "True", "audio_source": "file", "audio_path": "/data/commands"}
    assert speech_configuration(files) == {"source": "file", "audio_path": "/data/commands"}
    bad_cases = (
        ({"voice": "yes"}, "true or false"),
        ({"voice": "true", "audio_source": "mic"}, "microphone or file"),
        ({"voice": "true", "audio_source": "file"}, "audio_path"),
    )
    for bad, match in bad_cases:
        with pytest.raises(ValueError, match=match):
            speech_configuration(bad)
    assert launch_configuration({"voice": "true"}) == (defaults(), [], "lisa")  # lisa_node's own: unchanged
