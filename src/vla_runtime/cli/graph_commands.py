"""`vla-runtime topic|node|service ...`: inspect and poke a running graph, like `ros2 topic`."""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import yaml

from vla_runtime import ros
from vla_runtime.ros.interfaces import UnknownTypeError, get_message, get_service

Handler = Callable[[argparse.Namespace], int]
# How long to listen to liveliness tokens before answering a graph query.
_DISCOVERY_S = 0.6


class CliError(Exception):
    """A user error: printed as one line, exit code 1."""


@contextmanager
def _cli_node(args: argparse.Namespace) -> Iterator[Any]:
    ros.init(args=[])
    node = ros.Node(f"vla_runtime_cli_{os.getpid()}")
    try:
        yield node
    finally:
        node.destroy_node()
        ros.try_shutdown()


def _wait_graph(seconds: float) -> None:
    time.sleep(seconds)


def _message_class(type_name: str) -> Any:
    try:
        return get_message(type_name)
    except (UnknownTypeError, LookupError, ValueError) as exc:
        raise CliError(str(exc).strip("'\"")) from exc


def _topic_type(node: Any, topic: str, given: str | None, wait_s: float) -> Any:
    if given:
        return _message_class(given)
    topic = node.resolve_topic_name(topic)
    deadline = time.monotonic() + wait_s
    while True:
        types = dict(node.get_topic_names_and_types()).get(topic)
        if types:
            if len(types) > 1:
                raise CliError(f"{topic} carries several types {types}; name the one you want")
            return _message_class(types[0])
        if time.monotonic() >= deadline:
            raise CliError(
                f"no publisher or subscription on {topic} yet, so its type is unknown; "
                "pass the type, e.g. std_msgs/msg/String"
            )
        time.sleep(0.1)


def _qos(args: argparse.Namespace) -> Any:
    reliability = (
        ros.ReliabilityPolicy.BEST_EFFORT if args.best_effort else ros.ReliabilityPolicy.RELIABLE
    )
    durability = (
        ros.DurabilityPolicy.TRANSIENT_LOCAL
        if args.transient_local
        else ros.DurabilityPolicy.VOLATILE
    )
    return ros.QoSProfile(depth=args.depth, reliability=reliability, durability=durability)


def _matching_qos(node: Any, args: argparse.Namespace) -> Any:
    """Like `ros2 topic echo`: latched publishers get a TRANSIENT_LOCAL subscription (so the
    last value shows at once), best-effort ones a BEST_EFFORT one, unless flags say otherwise."""
    qos = _qos(args)
    deadline = time.monotonic() + _DISCOVERY_S
    while not (publishers := node.get_publishers_info_by_topic(args.topic)):
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if publishers and not args.best_effort and not args.transient_local:
        if all(
            p.qos_profile.durability == ros.DurabilityPolicy.TRANSIENT_LOCAL for p in publishers
        ):
            qos.durability = ros.DurabilityPolicy.TRANSIENT_LOCAL
        if any(p.qos_profile.reliability == ros.ReliabilityPolicy.BEST_EFFORT for p in publishers):
            qos.reliability = ros.ReliabilityPolicy.BEST_EFFORT
    return qos


def _parse_values(text: str, what: str) -> dict[str, Any]:
    try:
        values = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise CliError(f'{what} {text!r} is not valid YAML (e.g. "{{data: hello}}")') from exc
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise CliError(f'{what} must be a YAML mapping such as "{{data: hello}}", got {text!r}')
    return values


def _fill(cls: Any, values: dict[str, Any]) -> Any:
    from vla_runtime.ros.message_dict import fill_message

    try:
        return fill_message(cls, values)
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc)) from exc


def _to_yaml(msg: Any, truncate: int | None) -> str:
    from vla_runtime.ros.message_dict import message_to_yaml

    return message_to_yaml(msg, truncate_arrays=truncate or None)


# -- topic ------------------------------------------------------------------------------------


def topic_list(args: argparse.Namespace) -> int:
    with _cli_node(args) as node:
        _wait_graph(args.spin_time)
        for name, types in node.get_topic_names_and_types():
            print(f"{name} [{', '.join(types)}]" if args.show_types else name)
    return 0


def topic_info(args: argparse.Namespace) -> int:
    with _cli_node(args) as node:
        _wait_graph(args.spin_time)
        topic = node.resolve_topic_name(args.topic)
        types = dict(node.get_topic_names_and_types()).get(topic, [])
        publishers = node.get_publishers_info_by_topic(topic)
        subscriptions = node.get_subscriptions_info_by_topic(topic)
        own = node.get_name()
        subscriptions = [s for s in subscriptions if s.node_name != own]
        print(f"Type: {', '.join(types) or 'unknown'}")
        print(f"Publisher count: {len(publishers)}")
        print(f"Subscription count: {len(subscriptions)}")
        if args.verbose:
            for info in [*publishers, *subscriptions]:
                qos = info.qos_profile
                print(
                    f"\n  Node: {info.node_namespace.rstrip('/')}/{info.node_name}\n"
                    f"  Endpoint: {info.endpoint_type}\n"
                    f"  Type hash: {info.topic_type_hash}\n"
                    f"  GID: {info.endpoint_gid.hex('.')}\n"
                    f"  QoS: {qos.reliability.name} {qos.durability.name} "
                    f"{qos.history.name} depth={qos.depth}"
                )
    return 0


def topic_echo(args: argparse.Namespace) -> int:
    with _cli_node(args) as node:
        cls = _topic_type(node, args.topic, args.type, args.wait)
        done = []

        def on_msg(msg: Any) -> None:
            print(_to_yaml(msg, args.truncate), end="")
            print("---", flush=True)
            done.append(1)

        node.create_subscription(cls, args.topic, on_msg, _matching_qos(node, args))
        while ros.ok() and not (args.once and done):
            ros.spin_once(node, timeout_sec=0.1)
    return 0


def topic_hz(args: argparse.Namespace) -> int:
    with _cli_node(args) as node:
        cls = _topic_type(node, args.topic, args.type, args.wait)
        arrivals: deque[int] = deque(maxlen=args.window)
        # Raw: rate measurement must not pay for (or depend on) decoding.
        node.create_subscription(
            cls, args.topic, lambda _: arrivals.append(time.monotonic_ns()), _qos(args), raw=True
        )
        next_report = time.monotonic() + 1.0
        reports = 0
        while ros.ok() and (args.count is None or reports < args.count):
            ros.spin_once(node, timeout_sec=0.05)
            if time.monotonic() < next_report:
                continue
            next_report += 1.0
            reports += 1
            stamps = list(arrivals)
            if len(stamps) < 2:
                print("no new messages", flush=True)
                continue
            periods_s = [(b - a) / 1e9 for a, b in itertools.pairwise(stamps)]
            mean = statistics.fmean(periods_s)
            print(
                f"average rate: {1.0 / mean:.3f}\n"
                f"\tmin: {min(periods_s):.3f}s max: {max(periods_s):.3f}s "
                f"std dev: {statistics.pstdev(periods_s):.5f}s window: {len(stamps)}",
                flush=True,
            )
    return 0


def topic_pub(args: argparse.Namespace) -> int:
    cls = _message_class(args.type)
    msg = _fill(cls, _parse_values(args.values, "message values"))
    times = 1 if args.once else args.times
    with _cli_node(args) as node:
        publisher = node.create_publisher(cls, args.topic, _qos(args))
        deadline = time.monotonic() + args.wait
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        period_s = 1.0 / args.rate
        sent = 0
        next_s = time.monotonic()
        print(f"publisher: beginning loop on {publisher.topic_name}", flush=True)
        while ros.ok() and (times is None or sent < times):
            publisher.publish(msg)
            sent += 1
            print(f"publishing #{sent}: {_to_yaml(msg, 8).strip()}", flush=True)
            next_s += period_s
            if times is None or sent < times:
                time.sleep(max(0.0, next_s - time.monotonic()))
        if args.transient_local:
            time.sleep(args.keep_alive)  # late joiners fetch the cache from this process
    return 0


# -- node and service ---------------------------------------------------------------------------


def node_list(args: argparse.Namespace) -> int:
    with _cli_node(args) as node:
        _wait_graph(args.spin_time)
        own = node.get_fully_qualified_name()
        for name, namespace in node.get_node_names_and_namespaces():
            fqn = f"{namespace.rstrip('/')}/{name}"
            if fqn != own:
                print(fqn)
    return 0


def service_list(args: argparse.Namespace) -> int:
    with _cli_node(args) as node:
        _wait_graph(args.spin_time)
        for name, types in node.get_service_names_and_types():
            print(f"{name} [{', '.join(types)}]" if args.show_types else name)
    return 0


def service_call(args: argparse.Namespace) -> int:
    try:
        srv = get_service(args.type)
    except (UnknownTypeError, LookupError, ValueError) as exc:
        raise CliError(str(exc).strip("'\"")) from exc
    request = _fill(srv.Request, _parse_values(args.values, "request values"))
    with _cli_node(args) as node:
        client = node.create_client(srv, args.service)
        if not client.wait_for_service(timeout_sec=args.wait):
            raise CliError(f"service {client.srv_name} is not available (waited {args.wait} s)")
        print(f"requester: making request: {_to_yaml(request, 8).strip()}", flush=True)
        started = time.monotonic()
        future = client.call_async(request)
        ros.spin_until_future_complete(node, future, timeout_sec=args.timeout)
        if not future.done():
            raise CliError(f"no response from {client.srv_name} within {args.timeout} s")
        if future.exception() is not None:
            raise CliError(f"{client.srv_name}: {future.exception()}")
        elapsed_ms = (time.monotonic() - started) * 1e3
        print(f"\nresponse ({elapsed_ms:.1f} ms):\n{_to_yaml(future.result(), None)}", end="")
    return 0


# -- param --------------------------------------------------------------------------------------


def _param_call(
    node: Any, target: str, service: str, values: dict[str, Any], wait_s: float
) -> Any:
    srv = get_service("rcl_interfaces/srv/" + "".join(p.capitalize() for p in service.split("_")))
    target = "/" + target.strip("/")
    client = node.create_client(srv, f"{target}/{service}")
    if not client.wait_for_service(timeout_sec=wait_s):
        raise CliError(f"node {target} is not available (no {client.srv_name} service)")
    future = client.call_async(_fill(srv.Request, values))
    ros.spin_until_future_complete(node, future, timeout_sec=10.0)
    if not future.done() or future.exception() is not None:
        raise CliError(f"{client.srv_name}: {future.exception() or 'no response'}")
    return future.result()


def param_list(args: argparse.Namespace) -> int:
    with _cli_node(args) as node:
        result = _param_call(node, args.node, "list_parameters", {}, args.wait).result
        for name in result.names:
            print(f"  {name}")
    return 0


def param_get(args: argparse.Namespace) -> int:
    from vla_runtime.ros.zenoh.parameters import Parameter, parameter_value_to_python

    with _cli_node(args) as node:
        (value,) = _param_call(
            node, args.node, "get_parameters", {"names": [args.name]}, args.wait
        ).values
        if value.type == Parameter.Type.NOT_SET:
            raise CliError(f"parameter {args.name} is not set on {args.node}")
        kind = Parameter.Type(value.type).name.lower().replace("_", " ")
        print(f"{kind.capitalize()} value is: {parameter_value_to_python(value)}")
    return 0


def param_set(args: argparse.Namespace) -> int:
    from vla_runtime.ros.zenoh.parameters import Parameter

    try:
        value = yaml.safe_load(args.value)
        message = Parameter(args.name, value=value).to_parameter_msg()
    except (yaml.YAMLError, TypeError, ValueError) as exc:
        raise CliError(f"value {args.value!r} is not a parameter value: {exc}") from exc
    with _cli_node(args) as node:
        srv = get_service("rcl_interfaces/srv/SetParameters")
        request = srv.Request(parameters=[message])
        target = "/" + args.node.strip("/")
        client = node.create_client(srv, f"{target}/set_parameters")
        if not client.wait_for_service(timeout_sec=args.wait):
            raise CliError(f"node {target} is not available (no {client.srv_name} service)")
        response = client.call(request, 10.0)
        if response is None:
            raise CliError(f"{client.srv_name}: no response")
        (result,) = response.results
        if not result.successful:
            raise CliError(f"setting parameter {args.name} failed: {result.reason}")
        print("Set parameter successful")
    return 0


# -- registration -------------------------------------------------------------------------------


def _guard(handler: Handler) -> Handler:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except CliError as exc:
            print(f"vla-runtime: {exc}", file=sys.stderr)
            return 1

    return run


def _qos_arguments(parser: argparse.ArgumentParser, depth: int) -> None:
    parser.add_argument(
        "--depth", type=int, default=depth, help=f"history depth (default {depth})"
    )
    parser.add_argument(
        "--best-effort", action="store_true", help="BEST_EFFORT (default RELIABLE)"
    )
    parser.add_argument(
        "--transient-local", action="store_true", help="TRANSIENT_LOCAL (default VOLATILE)"
    )


def register(commands: Any, handlers: dict[str, Handler]) -> None:
    def add(path: str, help_text: str, handler: Handler) -> argparse.ArgumentParser:
        group, _, verb = path.partition(" ")
        if group not in groups:
            parser = commands.add_parser(group, help=f"{group} commands")
            groups[group] = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
        sub = groups[group].add_parser(verb, help=help_text, description=help_text)
        sub.set_defaults(handler=_guard(handler))
        return sub

    groups: dict[str, Any] = {}

    p = add("topic list", "list the topics of the graph", topic_list)
    p.add_argument("-t", "--show-types", action="store_true", help="also print each topic's type")
    p.add_argument("--spin-time", type=float, default=_DISCOVERY_S, help="discovery time [s]")

    p = add("topic info", "type, publishers and subscriptions of a topic", topic_info)
    p.add_argument("topic")
    p.add_argument("-v", "--verbose", action="store_true", help="per-endpoint node, QoS and GID")
    p.add_argument("--spin-time", type=float, default=_DISCOVERY_S, help="discovery time [s]")

    p = add("topic echo", "print the messages on a topic as YAML", topic_echo)
    p.add_argument("topic")
    p.add_argument("type", nargs="?", help="message type (default: discovered from the graph)")
    p.add_argument("--once", action="store_true", help="print one message and exit")
    p.add_argument(
        "--truncate",
        type=int,
        default=16,
        metavar="N",
        help="show at most N array elements (default 16; 0 = all)",
    )
    p.add_argument("--wait", type=float, default=3.0, help="seconds to wait for the topic's type")
    _qos_arguments(p, 10)

    p = add("topic hz", "print the rate a topic is published at", topic_hz)
    p.add_argument("topic")
    p.add_argument("type", nargs="?", help="message type (default: discovered from the graph)")
    p.add_argument("--window", type=int, default=10000, help="samples in the rate window")
    p.add_argument("--count", type=int, default=None, help="stop after this many reports")
    p.add_argument("--wait", type=float, default=3.0, help="seconds to wait for the topic's type")
    _qos_arguments(p, 10)

    p = add("topic pub", "publish a message given as YAML", topic_pub)
    p.add_argument("topic")
    p.add_argument("type", help="message type, e.g. std_msgs/msg/String")
    p.add_argument("values", nargs="?", default="{}", help='YAML mapping, e.g. "{data: hello}"')
    p.add_argument("-r", "--rate", type=float, default=1.0, help="publish rate [Hz] (default 1)")
    p.add_argument("-t", "--times", type=int, default=None, help="publish N times, then exit")
    p.add_argument("-1", "--once", action="store_true", help="publish once, then exit")
    p.add_argument(
        "--wait",
        type=float,
        default=1.0,
        help="seconds to wait for a subscriber before the first message",
    )
    p.add_argument(
        "--keep-alive",
        type=float,
        default=2.0,
        help="with --transient-local: seconds to stay up for late joiners",
    )
    _qos_arguments(p, 10)

    p = add("node list", "list the nodes of the graph", node_list)
    p.add_argument("--spin-time", type=float, default=_DISCOVERY_S, help="discovery time [s]")

    p = add("service list", "list the services of the graph", service_list)
    p.add_argument(
        "-t", "--show-types", action="store_true", help="also print each service's type"
    )
    p.add_argument("--spin-time", type=float, default=_DISCOVERY_S, help="discovery time [s]")

    p = add("service call", "call a service with a request given as YAML", service_call)
    p.add_argument("service")
    p.add_argument("type", help="service type, e.g. std_srvs/srv/Trigger")
    p.add_argument("values", nargs="?", default="{}", help='YAML mapping, e.g. "{data: true}"')
    p.add_argument("--wait", type=float, default=5.0, help="seconds to wait for the server")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the response")

    for verb, handler in (("list", param_list), ("get", param_get), ("set", param_set)):
        p = add(f"param {verb}", f"{verb} a node's parameters (ros2 param {verb})", handler)
        p.add_argument("node", help="node name, e.g. /talker")
        if verb != "list":
            p.add_argument("name", help="parameter name")
        if verb == "set":
            p.add_argument("value", help="YAML value, e.g. 30.0, true, [1, 2]")
        p.add_argument("--wait", type=float, default=5.0, help="seconds to wait for the node")

    for group in groups:
        handlers[group] = lambda args: args.handler(args)
