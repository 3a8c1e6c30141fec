"""lisa_ros.runtime.parameters: the node's parameters, declared once, and config/lisa.yaml."""

import math
from pathlib import Path

import pytest
import yaml

from lisa_ros.runtime.parameters import PARAMETERS, ParameterSpec, defaults, spec, validate

CONFIG = Path(__file__).resolve().parents[2] / "config" / "lisa.yaml"

# The contract with the node, the launch file and docs/ros.md.
EXPECTED = {
    "model_path": "",
    "vision_tower_path": "",
    "device": "auto",
    "precision": "auto",
    "conversation_template": "",
    "max_new_tokens": 128,
    "decode_mode": "eager",
    "short_answer": False,
    "pre_encode": True,
    "use_compressed_image": False,
    "reliable_inputs": False,
    "queue_size": 64,
    "max_image_age": 1.0,
    "max_command_length": 1000,
    "max_image_pixels": 50_000_000,
    "max_image_aspect_ratio": 20.0,
    "keep_conversation": True,
    "publish_overlay": True,
    "publish_compressed": False,
    "depth_scale": 1000.0,
    "min_depth": 0.1,
    "max_depth": 10.0,
    "mask_erosion": 2,
    "max_depth_skew": 0.05,
    "target_frame": "",
    "use_pose_topic": False,
    "voxel_size": 0.01,
    "tracking": True,
    "tracking_max_rate": 15.0,
    "tracking_keep_targets": False,
    "tracking_max_targets": 8,
    "tracking_min_score": 0.0,
    "tracking_min_area": 30,
    "tracking_max_area_change": 3.0,
    "tracking_max_shift": 0.25,
    "tracking_max_region_distance": 0.1,
    "tracking_reask_interval": 0.5,
    "tracking_max_reasks": 5,
    "tracking_expiry": 10.0,
    "tracking_max_views": 20,
}


def _typed(values: dict) -> list:
    return [(name, type(value), value) for name, value in values.items()]


def test_defaults_are_the_contract():
    assert _typed(defaults()) == _typed(EXPECTED)
    assert len({p.name for p in PARAMETERS}) == len(PARAMETERS)


def test_config_yaml_equals_defaults():
    content = yaml.safe_load(CONFIG.read_text())
    assert list(content) == ["/**"] and list(content["/**"]) == ["ros__parameters"]
    assert _typed(content["/**"]["ros__parameters"]) == _typed(defaults())


@pytest.mark.parametrize("parameter", PARAMETERS, ids=lambda p: p.name)
def test_every_parameter_is_described_and_its_default_valid(parameter):
    assert isinstance(parameter, ParameterSpec) and parameter.description
    assert parameter.type in (bool, int, float, str)
    assert validate(parameter.name, parameter.default) == parameter.default
    if parameter.choices is not None:
        assert parameter.type is str and parameter.default in parameter.choices
    if parameter.min is not None or parameter.max is not None:
        assert parameter.type in (int, float) and parameter.constraints.startswith("in [")


def test_choices_and_ranges():
    assert spec("device").choices == ("auto", "cpu", "cuda")
    assert spec("precision").choices == ("auto", "fp32", "bf16", "fp16", "int8", "int4")
    assert spec("conversation_template").choices == ("", "llava_v1", "llava_llama_2")
    ranges = {p.name: (p.min, p.max) for p in PARAMETERS if p.min is not None}
    assert ranges == {
        "max_new_tokens": (1, 4096),
        "queue_size": (1, 1024),
        "max_image_age": (0.0, 3600.0),
        "max_command_length": (1, 100000),
        "max_image_pixels": (1, 50_000_000),
        "max_image_aspect_ratio": (1.0, 20.0),
        "depth_scale": (0.001, 1000000.0),
        "min_depth": (0.0, 1000.0),
        "max_depth": (0.0, 1000.0),
        "mask_erosion": (0, 100),
        "max_depth_skew": (0.0, 3600.0),
        "voxel_size": (0.001, 1.0),
        "tracking_max_rate": (0.1, 1000.0),
        "tracking_max_targets": (1, 64),
        "tracking_min_score": (0.0, 1.0),
        "tracking_min_area": (0, 10**8),
        "tracking_max_area_change": (1.0, 1000.0),
        "tracking_max_shift": (0.0, 2.0),
        "tracking_max_region_distance": (0.0, 100.0),
        "tracking_reask_interval": (0.0, 3600.0),
        "tracking_max_reasks": (1, 1000),
        "tracking_expiry": (0.1, 86400.0),
        "tracking_max_views": (1, 1000),
    }
    assert spec("device").constraints == "one of 'auto', 'cpu', 'cuda'"
    assert spec("max_new_tokens").constraints == "in [1, 4096]"
    assert spec("model_path").constraints == ""


def test_validate_accepts_and_normalises():
    assert validate("max_new_tokens", 4096) == 4096
    assert validate("max_image_age", 0) == 0.0 and isinstance(validate("max_image_age", 2), float)
    assert validate("device", "cuda") == "cuda"
    assert validate("publish_overlay", False) is False


@pytest.mark.parametrize(
    "name,value,match",
    [
        ("nope", 1, "unknown parameter 'nope'"),
        ("max_new_tokens", 0, r"max_new_tokens must be in \[1, 4096\], got 0"),
        ("max_new_tokens", 4097, r"in \[1, 4096\]"),
        ("max_new_tokens", 1.5, "must be of type int, got float"),
        ("max_new_tokens", True, "must be of type int, got bool"),
        ("publish_overlay", 1, "must be of type bool, got int"),
        ("device", "gpu", "device must be one of 'auto', 'cpu', 'cuda', got 'gpu'"),
        ("precision", "int2", "one of 'auto', 'fp32'"),
        ("max_image_age", -0.1, r"in \[0.0, 3600.0\]"),
        ("max_image_age", math.nan, "must be finite"),
        ("max_image_age", "1.0", "must be of type float, got str"),
        ("target_frame", 3, "must be of type str"),
    ],
)
def test_validate_rejects(name, value, match):
    with pytest.raises(ValueError, match=match):
        validate(name, value)


def test_specs_are_frozen():
    with pytest.raises(AttributeError):
        PARAMETERS[0].default = "x"
