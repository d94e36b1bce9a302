"""Two processes over the zenoh backend: every QoS combination, services, late joiners, bad input.

The test process is one node; a child process (a real second process with its own session) is
the other. Everything runs on a private loopback router (conftest `router`).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
import zenoh

from vla_runtime import ros
from vla_runtime.ros.interfaces import get_message, get_service
from vla_runtime.ros.zenoh import wire
from vla_runtime.ros.zenoh.context import default_context
from vla_runtime.ros.zenoh.entities import ServiceError
from vla_runtime.ros.zenoh.typesupport import message_support

pytestmark = pytest.mark.integration

String = get_message("std_msgs/msg/String")

# (name, QoS keyword arguments) for every combination the issue lists.
QOS_CASES: dict[str, dict[str, Any]] = {
    "reliable_volatile_keep_last": dict(depth=10),
    "best_effort_volatile": dict(depth=10, reliability=2),
    "reliable_transient_local": dict(depth=10, durability=1),
    "best_effort_transient_local": dict(depth=10, reliability=2, durability=1),
    "keep_all": dict(history=2),
    "depth_1": dict(depth=1),
    "sensor_data": dict(depth=5, reliability=2),
}

PUBLISHER = """
import sys, time
from vla_runtime import ros
from vla_runtime.ros.interfaces import get_message
cases = {cases!r}
ros.init(args=[])
node = ros.Node("qos_talker")
String = get_message("std_msgs/msg/String")
pubs = {{name: node.create_publisher(String, "/qos/" + name, ros.QoSProfile(**kw))
        for name, kw in cases.items()}}
deadline = time.monotonic() + 10
while any(p.get_subscription_count() == 0 for p in pubs.values()) and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(0.3)
for i in range(20):
    for name, pub in pubs.items():
        pub.publish(String(data=f"{{name}} {{i}}"))
    time.sleep(0.01)
print("PUBLISHED", flush=True)
time.sleep(30)
"""


def _spin_until(node: Any, predicate: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        ros.spin_once(node, timeout_sec=0.05)
    return bool(predicate())


def test_every_qos_combination_crosses_processes(ros_context: None, spawn: Any) -> None:
    node = ros.Node("qos_listener")
    received: dict[str, list[str]] = {name: [] for name in QOS_CASES}
    for name, kwargs in QOS_CASES.items():
        node.create_subscription(
            String,
            f"/qos/{name}",
            lambda msg, n=name: received[n].append(msg.data),
            ros.QoSProfile(**kwargs),
        )
    child = spawn(PUBLISHER.format(cases=QOS_CASES))
    assert _spin_until(node, lambda: all(len(v) == 20 for v in received.values()), 20.0), {
        name: len(v) for name, v in received.items()
    }
    for name, messages in received.items():
        assert messages == [f"{name} {i}" for i in range(20)], name
    child.stop()


LATCHED = """
import time
from vla_runtime import ros
from vla_runtime.ros.interfaces import get_message
ros.init(args=[])
node = ros.Node("mode_publisher")
String = get_message("std_msgs/msg/String")
qos = ros.QoSProfile(depth=3, durability=ros.DurabilityPolicy.TRANSIENT_LOCAL)
pub = node.create_publisher(String, "/robot/mode", qos)
for mode in ["IDLE", "TELEOP", "POLICY", "HOLD"]:
    pub.publish(String(data=mode))
print("PUBLISHED", flush=True)
time.sleep(30)
"""


def test_transient_local_late_joiner_gets_the_last_depth_samples(
    ros_context: None, spawn: Any
) -> None:
    child = spawn(LATCHED)
    child.wait_for_line("PUBLISHED")
    time.sleep(0.5)  # the samples were published before anyone subscribed
    node = ros.Node("late_joiner")
    got: list[str] = []
    qos = ros.QoSProfile(depth=3, durability=ros.DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(String, "/robot/mode", lambda m: got.append(m.data), qos)
    assert _spin_until(node, lambda: len(got) >= 3, 10.0), got
    assert got == ["TELEOP", "POLICY", "HOLD"]


SERVER = """
import time
from vla_runtime import ros
from vla_runtime.ros.interfaces import get_service
ros.init(args=[])
node = ros.Node("servers")
Trigger = get_service("std_srvs/srv/Trigger")
SetBool = get_service("std_srvs/srv/SetBool")
AddTwoInts = get_service("example_interfaces/srv/AddTwoInts")
state = {"held": False}

def hold(request, response):
    state["held"] = True
    response.success = True
    response.message = "holding"
    return response

def set_bool(request, response):
    response.success = bool(request.data)
    response.message = f"data was {request.data}"
    return response

def add(request, response):
    response.sum = request.a + request.b
    return response

def broken(request, response):
    raise RuntimeError("server bug")

node.create_service(Trigger, "/robot/hold", hold)
node.create_service(SetBool, "/set_flag", set_bool)
node.create_service(AddTwoInts, "add_two_ints", add)
node.create_service(Trigger, "/broken", broken)
print("READY", flush=True)
ros.spin(node)
"""


def test_services_round_trip(ros_context: None, spawn: Any) -> None:
    spawn(SERVER).wait_for_line("READY")
    node = ros.Node("caller")
    trigger = node.create_client(get_service("std_srvs/srv/Trigger"), "/robot/hold")
    assert trigger.wait_for_service(timeout_sec=10.0)
    future = trigger.call_async(get_service("std_srvs/srv/Trigger").Request())
    ros.spin_until_future_complete(node, future, timeout_sec=10.0)
    assert future.done()
    assert future.result().success is True
    assert future.result().message == "holding"

    set_bool = node.create_client(get_service("std_srvs/srv/SetBool"), "/set_flag")
    assert set_bool.wait_for_service(timeout_sec=10.0)
    response = set_bool.call(get_service("std_srvs/srv/SetBool").Request(data=True), 10.0)
    assert response.success is True and response.message == "data was True"

    add_two_ints = get_service("example_interfaces/srv/AddTwoInts")
    add = node.create_client(add_two_ints, "add_two_ints")
    assert add.wait_for_service(timeout_sec=10.0)
    assert add.call(add_two_ints.Request(a=40, b=2), 10.0).sum == 42

    broken = node.create_client(get_service("std_srvs/srv/Trigger"), "/broken")
    assert broken.wait_for_service(timeout_sec=10.0)
    future = broken.call_async(get_service("std_srvs/srv/Trigger").Request())
    ros.spin_until_future_complete(node, future, timeout_sec=10.0)
    assert isinstance(future.exception(), ServiceError)
    assert "server bug" in str(future.exception())


def test_client_without_server(ros_context: None) -> None:
    node = ros.Node("lonely")
    client = node.create_client(get_service("std_srvs/srv/Trigger"), "/nobody_home")
    assert client.wait_for_service(timeout_sec=0.5) is False
    assert client.service_is_ready() is False


def test_bad_payloads_are_rejected_and_the_subscription_keeps_working(
    ros_context: None,
) -> None:
    node = ros.Node("robust_listener")
    got: list[str] = []
    subscription = node.create_subscription(String, "/robust", lambda m: got.append(m.data), 10)
    context = default_context()
    support = message_support("std_msgs/msg/String")
    key = wire.data_key(context.domain_id, "/robust", support.dds_name, support.type_hash)
    session = context.session
    good_attachment = wire.Attachment(1, time.time_ns(), b"\x01" * 16).encode()
    # Malformed CDR, CDR of another type, a missing attachment, then a good sample.
    session.put(key, b"\x00\x01\x00\x00\xff\xff\xff\x7f", attachment=good_attachment)
    session.put(
        key,
        bytes(
            message_support("std_msgs/msg/Float64").serialize(
                get_message("std_msgs/msg/Float64")(data=1.5)
            )
        ),
        attachment=good_attachment,
    )
    session.put(key, bytes(support.serialize(String(data="no attachment"))))
    session.put(key, bytes(support.serialize(String(data="good"))), attachment=good_attachment)
    assert _spin_until(node, lambda: got == ["good"] and subscription.rejected >= 2, 5.0), (
        got,
        subscription.rejected,
    )
    assert ros.ok()


def test_publisher_refuses_the_wrong_message_type(ros_context: None) -> None:
    node = ros.Node("typed_talker")
    publisher = node.create_publisher(String, "/typed", 10)
    with pytest.raises(TypeError, match="std_msgs/msg/String"):
        publisher.publish(get_message("std_msgs/msg/Float64")(data=1.0))


def test_graph_sees_nodes_topics_and_counts(ros_context: None, spawn: Any) -> None:
    spawn(SERVER).wait_for_line("READY")
    node = ros.Node("observer", namespace="/lab")
    publisher = node.create_publisher(String, "chatter", 10)
    node.create_subscription(String, "chatter", lambda _: None, 10)
    assert publisher.topic_name == "/lab/chatter"
    graph = default_context().graph
    assert graph.wait_until(
        lambda: (
            ("servers", "/") in graph.node_names_and_namespaces()
            and "/robot/hold" in dict(graph.service_names_and_types())
        ),
        10.0,
    )
    assert ("observer", "/lab") in node.get_node_names_and_namespaces()
    assert ("/lab/chatter", ["std_msgs/msg/String"]) in node.get_topic_names_and_types()
    assert node.count_publishers("chatter") == 1
    assert node.count_subscribers("/lab/chatter") == 1
    services = dict(node.get_service_names_and_types())
    assert services["/robot/hold"] == ["std_srvs/srv/Trigger"]


def test_remapping_and_namespace_from_ros_args(router: str) -> None:
    ros.init(args=["prog", "--ros-args", "-r", "__ns:=/arm", "-r", "chatter:=/remapped"])
    try:
        node = ros.Node("talker")
        assert node.get_fully_qualified_name() == "/arm/talker"
        assert node.create_publisher(String, "chatter", 10).topic_name == "/remapped"
        assert node.create_publisher(String, "other", 10).topic_name == "/arm/other"
    finally:
        ros.try_shutdown()


def test_timer_runs_on_the_steady_clock(ros_context: None) -> None:
    node = ros.Node("ticker")
    ticks: list[int] = []
    timer = node.create_timer(0.02, lambda: ticks.append(time.monotonic_ns()))
    assert _spin_until(node, lambda: len(ticks) >= 10, 5.0)
    timer.cancel()
    assert timer.is_canceled()
    count = len(ticks)
    ros.spin_once(node, timeout_sec=0.1)
    assert len(ticks) == count
    periods = [(b - a) / 1e9 for a, b in itertools.pairwise(ticks)]
    assert 0.015 < sum(periods) / len(periods) < 0.03


def test_multi_threaded_executor_runs_reentrant_callbacks_in_parallel(ros_context: None) -> None:
    node = ros.Node("parallel")
    group = ros.ReentrantCallbackGroup()
    started: list[float] = []

    def slow() -> None:
        started.append(time.monotonic())
        time.sleep(0.3)

    for _ in range(2):
        timer = node.create_timer(0.01, slow, callback_group=group)
    executor = ros.MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    deadline = time.monotonic() + 3
    while len(started) < 2 and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    executor.shutdown()
    assert len(started) >= 2
    assert started[1] - started[0] < 0.25  # the second did not wait for the first
    del timer


def test_raw_zenoh_peer_sees_our_attachment(ros_context: None) -> None:
    node = ros.Node("attached")
    publisher = node.create_publisher(String, "/attached", 10)
    context = default_context()
    support = message_support("std_msgs/msg/String")
    key = wire.data_key(context.domain_id, "/attached", support.dds_name, support.type_hash)
    samples: list[zenoh.Sample] = []
    subscriber = context.session.declare_subscriber(key, samples.append)
    time.sleep(0.2)
    publisher.publish(String(data="a"))
    publisher.publish(String(data="b"))
    deadline = time.monotonic() + 5
    while len(samples) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    subscriber.undeclare()
    attachments = [wire.Attachment.decode(s.attachment.to_bytes()) for s in samples]
    assert [a.sequence_number for a in attachments] == [1, 2]
    assert all(a.gid == publisher.gid for a in attachments)
    assert publisher.gid == wire.gid_of(publisher.token_key)
    assert bytes(samples[0].payload.to_bytes())[:4] == b"\x00\x01\x00\x00"
