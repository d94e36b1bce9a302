"""MCAP recordings written by `McapRecorder` and read back: by the report (plots, summary, a
truncated file) and by third-party readers (mcap-ros2-support, rosbags)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from vla_runtime.profiling.plots import SECTIONS, render_html
from vla_runtime.profiling.recorder import McapRecorder, header_stamp_ns
from vla_runtime.profiling.report import read_recording, summary_text, write_report

STORE = get_typestore(Stores.ROS2_JAZZY)
T = STORE.types
START_NS = 1_700_000_000_000_000_000
JOINTS = ["j1", "j2"]


def _header(stamp_ns: int) -> Any:
    stamp = T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return T["std_msgs/msg/Header"](stamp=stamp, frame_id="")


def _cdr(msg: Any) -> bytes:
    return bytes(STORE.serialize_cdr(msg, msg.__msgtype__))


def _image(stamp_ns: int) -> Any:
    return T["sensor_msgs/msg/Image"](
        header=_header(stamp_ns),
        height=2,
        width=2,
        encoding="rgb8",
        is_bigendian=0,
        step=6,
        data=np.zeros(12, np.uint8),
    )


def _joint_state(stamp_ns: int) -> Any:
    return T["sensor_msgs/msg/JointState"](
        header=_header(stamp_ns),
        name=JOINTS,
        position=np.zeros(2),
        velocity=np.zeros(0),
        effort=np.zeros(0),
    )


def _chunk(stamp_ns: int) -> Any:
    point = T["trajectory_msgs/msg/JointTrajectoryPoint"]
    duration = T["builtin_interfaces/msg/Duration"]
    rows = [
        point(
            positions=np.zeros(2),
            velocities=np.zeros(0),
            accelerations=np.zeros(0),
            effort=np.zeros(0),
            time_from_start=duration(sec=0, nanosec=i * 33_000_000),
        )
        for i in range(4)
    ]
    return T["trajectory_msgs/msg/JointTrajectory"](
        header=_header(stamp_ns), joint_names=JOINTS, points=rows
    )


def _diagnostics(stamp_ns: int, statuses: list[tuple[str, int, str, dict[str, str]]]) -> Any:
    status = T["diagnostic_msgs/msg/DiagnosticStatus"]
    key_value = T["diagnostic_msgs/msg/KeyValue"]
    return T["diagnostic_msgs/msg/DiagnosticArray"](
        header=_header(stamp_ns),
        status=[
            status(
                level=level,
                name=name,
                message=message,
                hardware_id="test",
                values=[key_value(key=k, value=v) for k, v in values.items()],
            )
            for name, level, message, values in statuses
        ],
    )


def _stage(p50: float) -> dict[str, str]:
    return {
        "p50_ms": f"{p50}",
        "p90_ms": f"{p50 * 1.5}",
        "p99_ms": f"{p50 * 2}",
        "p999_ms": f"{p50 * 3}",
        "max_ms": f"{p50 * 4}",
        "count": "100",
        "rate_hz": "30",
    }


def write_pipeline_recording(path: Path, seconds: int = 4) -> None:
    """A fake pipeline: a 30 Hz camera, 100 Hz driver, 5 Hz chunks, 1 Hz diagnostics."""
    recorder = McapRecorder(path, chunk_size=4096)
    topics = {
        "/cameras/top/image_raw": "sensor_msgs/msg/Image",
        "/robot/joint_commands": "sensor_msgs/msg/JointState",
        "/policy/action_chunk": "trajectory_msgs/msg/JointTrajectory",
        "/robot/mode": "std_msgs/msg/String",
        "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
    }
    for topic, type_name in topics.items():
        recorder.add_topic(topic, type_name)
    recorder.write("/robot/mode", _cdr(T["std_msgs/msg/String"](data="POLICY")), START_NS)
    rng = np.random.default_rng(0)
    events: list[tuple[int, str, bytes]] = []
    for i in range(seconds * 30):
        capture = START_NS + i * 33_333_333
        arrival = capture + int(rng.uniform(2e6, 6e6))
        events.append((arrival, "/cameras/top/image_raw", _cdr(_image(capture))))
        if i % 6 == 0:
            events.append((capture + 80_000_000, "/policy/action_chunk", _cdr(_chunk(capture))))
    for i in range(seconds * 100):
        tick = START_NS + i * 10_000_000 + int(rng.uniform(0, 5e5))
        events.append((tick + 100_000, "/robot/joint_commands", _cdr(_joint_state(tick))))
    for second in range(1, seconds + 1):
        now = START_NS + second * 10**9
        breached = second == 2
        statuses = [
            (
                "policy",
                0,
                "running",
                {
                    "vision_ms": "12.5",
                    "prefill_ms": "20.0",
                    "depth_ms": "8.0",
                    "action_ms": "15.0",
                    "total_ms": f"{55 + second}",
                    "iterations": str(second % 3 + 1),
                    "changed_cells": str(7 * second % 100),
                    "inferences": str(5 * second),
                },
            ),
            ("driver: test", 0, "running", {"mode": "POLICY", "overruns": "0", "ticks": "100"}),
            ("latency_monitor/stage/camera_top", 0, "", _stage(4.0)),
            ("latency_monitor/stage/policy_total", 0, "", _stage(55.0)),
            (
                "latency_monitor/deadline/max_chunk_age",
                2 if breached else 0,
                "breached: chunk age 150 ms > 100 ms" if breached else "ok",
                {"state": "breached" if breached else ("released" if second == 3 else "ok")},
            ),
        ]
        events.append((now, "/diagnostics", _cdr(_diagnostics(now, statuses))))
    for log_time, topic, payload in sorted(events):
        recorder.write(topic, payload, log_time)
    recorder.close()


@pytest.fixture
def recording_path(tmp_path: Path) -> Path:
    path = tmp_path / "run.mcap"
    write_pipeline_recording(path)
    return path


def test_header_stamp_is_read_from_raw_cdr() -> None:
    assert header_stamp_ns(_cdr(_image(START_NS + 123))) == START_NS + 123
    assert header_stamp_ns(b"\x00\x01") is None


def test_report_has_every_section_and_the_numbers(recording_path: Path, tmp_path: Path) -> None:
    output = tmp_path / "report.html"
    recording, text = write_report(recording_path, output)
    assert not recording.problem
    page = output.read_text()
    for section, title, _ in SECTIONS:
        assert f'id="{section}"' in page and title in page
    assert page.count("<svg") == len(SECTIONS)
    assert "no data" not in page  # every panel has data in this recording
    assert "<link" not in page and "src=" not in page and 'href="http' not in page  # no assets
    # Stages measured from stamps and traces, the monitor's summaries, the deadline events.
    stages = dict((row[0], row) for row in _stage_rows(recording))
    assert 2.0 < stages["camera top (capture → arrival)"][2] < 6.0
    assert stages["chunk age (capture → chunk arrival)"][2] == pytest.approx(80.0, abs=0.01)
    assert "reaction (capture → first applied tick)" in stages
    assert len(recording.policy) == 4 and "policy total" in stages
    assert 9.0 < np.median(recording.loop_periods_ms) < 11.0
    assert set(recording.monitor_stages) == {"camera_top", "policy_total"}
    assert [(e.rule, e.state) for e in recording.deadline_events] == [
        ("max_chunk_age", "breached"),
        ("max_chunk_age", "released"),
        ("max_chunk_age", "ok"),
    ]
    assert "breached: chunk age 150 ms" in text and "camera_top" in text


def _stage_rows(recording: Any) -> list[Any]:
    from vla_runtime.profiling.report import stage_table

    return stage_table(recording)


def test_missing_topics_give_no_data_panels(tmp_path: Path) -> None:
    path = tmp_path / "talker.mcap"
    recorder = McapRecorder(path)
    recorder.add_topic("/chatter", "std_msgs/msg/String")
    for i in range(5):
        recorder.write("/chatter", _cdr(T["std_msgs/msg/String"](data=f"hi {i}")), START_NS + i)
    recorder.close()
    recording = read_recording(path)
    page = render_html(recording)
    assert page.count("no data") == len(SECTIONS)
    assert "latency monitor: absent" in summary_text(recording)


@pytest.mark.parametrize("keep", [0.0, 0.01, 0.4, 0.97])
def test_truncated_recording_is_reported_not_raised(
    recording_path: Path, tmp_path: Path, keep: float
) -> None:
    data = recording_path.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: int(len(data) * keep)])
    recording, text = write_report(cut, tmp_path / "cut.html")
    assert recording.problem
    assert "INCOMPLETE" in text
    page = (tmp_path / "cut.html").read_text()
    assert all(f'id="{section}"' in page for section, _, _ in SECTIONS)
    if keep > 0.9:  # most of the file: most of the messages
        assert recording.topics["/robot/joint_commands"].count > 300


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    recording = read_recording(tmp_path / "absent.mcap")
    assert "cannot open" in recording.problem


def test_third_party_readers_decode_the_recording(recording_path: Path) -> None:
    with open(recording_path, "rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        decoded = list(reader.iter_decoded_messages(topics=["/diagnostics"]))
    assert len(decoded) == 4
    schema, _, _, first = decoded[0]
    assert schema is not None and schema.name == "diagnostic_msgs/msg/DiagnosticArray"
    assert first.status[0].name == "policy"
    with AnyReader([recording_path]) as reader:
        connections = [c for c in reader.connections if c.topic == "/policy/action_chunk"]
        messages = [
            reader.deserialize(raw, c.msgtype)
            for c, _, raw in reader.messages(connections=connections)
        ]
    assert len(messages) == 20
    assert list(messages[0].joint_names) == JOINTS
    assert messages[0].header.stamp.sec == START_NS // 10**9


def test_top_board_renders_stages_deadlines_and_nodes() -> None:
    from rich.console import Console

    from vla_runtime.profiling.top import DiagnosticsBoard

    board = DiagnosticsBoard()
    console = Console(width=160, record=True)
    board.update(
        _diagnostics(START_NS, [("driver: so100", 0, "running", {"mode": "POLICY"})]), 10.0
    )
    console.print(board.render(11.0))
    text = console.export_text()
    assert "driver: so100" in text and "mode POLICY" in text
    assert "latency monitor: absent" in text
    board.update(
        _diagnostics(
            START_NS,
            [
                ("latency_monitor/stage/camera_top", 0, "", _stage(4.0)),
                ("latency_monitor/deadline/max_chunk_age", 2, "breached: age 150 ms", {}),
            ],
        ),
        11.0,
    )
    console.print(board.render(15.0))
    text = console.export_text()
    assert "camera_top" in text and "4.00" in text and "8.00" in text  # p50, p99
    assert "breached" in text and "STALE" in text  # the driver's status is 5 s old


def test_unstamped_and_future_stamped_messages_are_counted_not_plotted(tmp_path: Path) -> None:
    path = tmp_path / "skew.mcap"
    recorder = McapRecorder(path)
    recorder.add_topic("/cameras/top/image_raw", "sensor_msgs/msg/Image")
    recorder.write("/cameras/top/image_raw", _cdr(_image(START_NS)), START_NS + 5_000_000)
    recorder.write("/cameras/top/image_raw", _cdr(_image(START_NS + 10**9)), START_NS + 10**7)
    recorder.write("/cameras/top/image_raw", _cdr(_image(0)), START_NS + 2 * 10**7)
    recorder.close()
    recording = read_recording(path)
    stage = "camera top (capture → arrival)"
    assert [ms for _, ms in recording.stage_samples[stage]] == [5.0]
    assert recording.future_stamped == {stage: 1} and recording.unstamped == {stage: 1}
    text = summary_text(recording)
    assert "1 messages stamped in the future (clock skew?)" in text
    assert "1 messages without a stamp" in text
