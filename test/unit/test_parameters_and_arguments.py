"""--ros-args parsing, ROS 2 parameter files and the parameter table (no middleware needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vla_runtime.ros.interfaces import get_message
from vla_runtime.ros.zenoh.arguments import (
    RosArgumentError,
    load_params_file,
    parse_ros_args,
    remove_ros_args,
)
from vla_runtime.ros.zenoh.parameters import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    Parameter,
    ParameterAlreadyDeclaredException,
    ParameterNotDeclaredException,
    ParameterTable,
    set_result,
)

Descriptor = get_message("rcl_interfaces/msg/ParameterDescriptor")


def test_launch_ros_style_arguments() -> None:
    argv = [
        "prog",
        "--user-flag",
        "--ros-args",
        "-r",
        "__node:=camera_top",
        "-r",
        "__ns:=/cams",
        "--params-file",
        "/tmp/p.yaml",
        "-p",
        "rate_hz:=30.0",
        "-p",
        "camera_top:name:=top",
        "-r",
        "image:=/cameras/top/image_raw",
        "--log-level",
        "debug",
        "--",
        "tail",
    ]
    args = parse_ros_args(argv)
    assert args.node_name_override("camera") == "camera_top"
    assert args.namespace_override("camera_top") == "/cams"
    assert args.params_files == ["/tmp/p.yaml"]
    assert [(p.name, p.value, p.node) for p in args.params] == [
        ("rate_hz", 30.0, None),
        ("name", "top", "camera_top"),
    ]
    assert args.remaps[-1].source == "image"
    assert args.log_level == "debug"
    assert remove_ros_args(argv) == ["prog", "--user-flag", "tail"]


@pytest.mark.parametrize(
    "argv", [["--ros-args", "-r"], ["--ros-args", "-p", "novalue"], ["--ros-args", "--bogus"]]
)
def test_malformed_ros_args_fail_clearly(argv: list[str]) -> None:
    with pytest.raises(RosArgumentError):
        parse_ros_args(argv)


def test_params_file_precedence_wildcard_then_node(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(
        "/**:\n  ros__parameters:\n    rate_hz: 10.0\n    shared: true\n"
        "/cams/camera_top:\n  ros__parameters:\n    rate_hz: 30.0\n    crop: {width: 320}\n"
        "other_node:\n  ros__parameters:\n    rate_hz: 1.0\n"
    )
    assert load_params_file(str(path), "/cams/camera_top") == {
        "rate_hz": 30.0,
        "shared": True,
        "crop.width": 320,
    }
    assert load_params_file(str(path), "/other_node") == {"rate_hz": 1.0, "shared": True}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("- a\n- b\n", "top level"),
        ("/**:\n  rate_hz: 1\n", "ros__parameters"),
        ("/**: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_params_file_names_the_file(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RosArgumentError, match=match) as info:
        load_params_file(str(path), "/node")
    assert "bad.yaml" in str(info.value)


def test_missing_params_file() -> None:
    with pytest.raises(RosArgumentError, match=r"no_such\.yaml"):
        load_params_file("/nonexistent/no_such.yaml", "/node")


def test_declare_with_override_and_descriptor() -> None:
    table = ParameterTable("/driver", {"rate_hz": 250.0}, allow_undeclared=False)
    parameter = table.declare("rate_hz", 100.0, Descriptor(read_only=True), False)
    assert parameter.value == 250.0
    assert parameter.type_ == Parameter.Type.DOUBLE
    with pytest.raises(ParameterAlreadyDeclaredException):
        table.declare("rate_hz", 1.0, None, False)
    with pytest.raises(ParameterNotDeclaredException, match="rate_hz"):
        table.get("missing")


def test_override_of_the_wrong_type_says_what_to_write() -> None:
    table = ParameterTable("/driver", {"rate_hz": 250}, allow_undeclared=False)
    with pytest.raises(InvalidParameterTypeException, match="decimal point"):
        table.declare("rate_hz", 100.0, None, False)


def test_read_only_and_type_checks_on_set() -> None:
    table = ParameterTable("/node", {}, allow_undeclared=False)
    table.declare("port", "/dev/ttyUSB0", Descriptor(read_only=True), False)
    table.declare("gain", 1.0, None, False)
    (result,) = table.set([Parameter("port", value="/dev/ttyACM0")])
    assert not result.successful and "read-only" in result.reason
    (result,) = table.set([Parameter("gain", value="high")])
    assert not result.successful and "DOUBLE" in result.reason
    (result,) = table.set([Parameter("gain", value=2.5)])
    assert result.successful and table.get("gain").value == 2.5
    (result,) = table.set([Parameter("undeclared", value=1)])
    assert not result.successful


def test_set_callbacks_can_veto_and_post_callbacks_see_applied_values() -> None:
    table = ParameterTable("/node", {}, allow_undeclared=False)
    table.declare("gain", 1.0, None, False)
    applied: list[float] = []
    table.on_set.append(
        lambda params: set_result(all(p.value <= 10.0 for p in params), "gain must be <= 10")
    )
    table.post_set.append(lambda params: applied.extend(p.value for p in params))
    (result,) = table.set([Parameter("gain", value=20.0)])
    assert not result.successful and result.reason == "gain must be <= 10"
    assert table.get("gain").value == 1.0
    assert table.set_atomically([Parameter("gain", value=5.0)]).successful
    assert applied == [5.0]
    with pytest.raises(InvalidParameterValueException):
        table.declare("other", 11.0, None, False)


def test_parameter_type_inference() -> None:
    assert Parameter("a", value=True).type_ == Parameter.Type.BOOL
    assert Parameter("a", value=[1, 2]).type_ == Parameter.Type.INTEGER_ARRAY
    assert Parameter("a", value=[1.0]).type_ == Parameter.Type.DOUBLE_ARRAY
    assert Parameter("a", value=["x"]).type_ == Parameter.Type.STRING_ARRAY
    assert Parameter("a").type_ == Parameter.Type.NOT_SET
    with pytest.raises(TypeError):
        Parameter("a", value={"no": "dicts"})
    assert Parameter("a", value=3).get_parameter_value().integer_value == 3
