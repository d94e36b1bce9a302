"""rclpy.node.Node for the zenoh backend: names, remapping, entities, parameters, graph queries."""

from __future__ import annotations

import contextlib
import re
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from vla_runtime.ros.interfaces import type_name_of
from vla_runtime.ros.zenoh import wire
from vla_runtime.ros.zenoh.arguments import RosArguments, load_params_file, parse_ros_args
from vla_runtime.ros.zenoh.callback_groups import CallbackGroup, MutuallyExclusiveCallbackGroup
from vla_runtime.ros.zenoh.context import Context, default_context
from vla_runtime.ros.zenoh.entities import (
    Client,
    Entity,
    GuardCondition,
    Publisher,
    Rate,
    Service,
    Subscription,
    Timer,
    Work,
)
from vla_runtime.ros.zenoh.logger import RcutilsLogger, severity_from_name
from vla_runtime.ros.zenoh.parameter_services import ParameterService
from vla_runtime.ros.zenoh.parameters import Parameter, ParameterTable
from vla_runtime.ros.zenoh.qos import QoSProfile, qos_from, qos_profile_services_default
from vla_runtime.ros.zenoh.time import ROSClock
from vla_runtime.ros.zenoh.typesupport import message_support, service_support

if TYPE_CHECKING:
    from vla_runtime.ros.zenoh.executors import Executor

_NODE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Node:
    """A ROS 2 node; same constructor and methods as rclpy.node.Node."""

    def __init__(
        self,
        node_name: str,
        *,
        context: Context | None = None,
        cli_args: list[str] | None = None,
        namespace: str | None = None,
        use_global_arguments: bool = True,
        enable_rosout: bool = True,
        start_parameter_services: bool = True,
        parameter_overrides: list[Parameter] | None = None,
        allow_undeclared_parameters: bool = False,
        automatically_declare_parameters_from_overrides: bool = False,
        enable_logger_service: bool = False,
    ) -> None:
        self.context = context or default_context()
        if not self.context.ok():
            raise RuntimeError(
                f"cannot create node {node_name!r}: call vla_runtime.ros.init() first"
            )
        rules = [*(self.context.ros_args.remaps if use_global_arguments else [])]
        local = parse_ros_args(["--ros-args", *cli_args] if cli_args else [])
        rules += local.remaps
        self._args = RosArguments(remaps=rules)
        self._name = self._args.node_name_override(node_name) or node_name
        if not _NODE_NAME_RE.match(self._name):
            raise ValueError(
                f"invalid node name {self._name!r}: letters, digits and '_', not starting "
                "with a digit"
            )
        self._namespace = wire.normalize_namespace(
            self._args.namespace_override(self._name) or namespace
        )
        self._logger = RcutilsLogger(self.get_fully_qualified_name().lstrip("/").replace("/", "."))
        log_level = local.log_level or self.context.ros_args.log_level
        if log_level:
            self._logger.set_level(severity_from_name(log_level))

        self.default_callback_group = MutuallyExclusiveCallbackGroup()
        self._entities: list[Entity] = []
        self._tasks: deque[Work] = deque()
        self._executors: weakref.WeakSet[Executor] = weakref.WeakSet()
        self._executor: Executor | None = None
        self._lock = threading.Lock()
        self._clock = ROSClock()

        overrides = self._collect_overrides(
            [self.context.ros_args, local] if use_global_arguments else [local],
            parameter_overrides or [],
        )
        self._parameters = ParameterTable(
            self.get_fully_qualified_name(), overrides, allow_undeclared_parameters
        )
        self.declare_parameter("use_sim_time", False)
        if automatically_declare_parameters_from_overrides:
            for name, value in overrides.items():
                if name not in self._parameters.values:
                    self.declare_parameter(name, value)

        self._node_id = self.context.next_entity_id()
        token = wire.EntityToken(
            domain_id=self.context.domain_id,
            session_id=self.context.session_id,
            node_id=self._node_id,
            entity_id=self._node_id,
            kind=wire.NODE,
            enclave=self.context.ros_args.enclave,
            namespace=self._namespace,
            node_name=self._name,
        )
        self._token_key = token.key()
        self._token = self.context.session.liveliness().declare_token(self._token_key)
        self.context.graph.put(self._token_key)
        if start_parameter_services:
            ParameterService(self)

    def _collect_overrides(
        self, arg_sets: list[RosArguments], explicit: list[Parameter]
    ) -> dict[str, Any]:
        fqn = self.get_fully_qualified_name()
        overrides: dict[str, Any] = {}
        for args in arg_sets:
            for path in args.params_files:
                overrides.update(load_params_file(path, fqn))
            for param in args.params:
                if param.node in (None, self._name, fqn):
                    overrides[param.name] = param.value
        for parameter in explicit:
            overrides[parameter.name] = parameter.value
        return overrides

    # -- identity ----------------------------------------------------------------------------

    def get_name(self) -> str:
        return self._name

    def get_namespace(self) -> str:
        return self._namespace

    def get_fully_qualified_name(self) -> str:
        return f"{self._namespace.rstrip('/')}/{self._name}"

    def get_logger(self) -> RcutilsLogger:
        return self._logger

    def get_clock(self) -> ROSClock:
        return self._clock

    @property
    def executor(self) -> Executor | None:
        return self._executor

    @executor.setter
    def executor(self, executor: Executor | None) -> None:
        if executor is not None:
            executor.add_node(self)
        elif self._executor is not None:
            self._executor.remove_node(self)

    # -- names ------------------------------------------------------------------------------

    def resolve_topic_name(self, topic: str, *, only_expand: bool = False) -> str:
        expanded = wire.resolve_name(topic, self._namespace, self._name)
        if only_expand:
            return expanded
        for rule in self._args.remaps:
            if rule.source.startswith("__") or rule.node not in (None, self._name):
                continue
            if wire.resolve_name(rule.source, self._namespace, self._name) == expanded:
                return wire.resolve_name(rule.target, self._namespace, self._name)
        return expanded

    resolve_service_name = resolve_topic_name

    def _endpoint_token(
        self, kind: str, fq_name: str, dds_type: str, type_hash: str, qos: QoSProfile
    ) -> wire.EntityToken:
        return wire.EntityToken(
            domain_id=self.context.domain_id,
            session_id=self.context.session_id,
            node_id=self._node_id,
            entity_id=self.context.next_entity_id(),
            kind=kind,
            enclave=self.context.ros_args.enclave,
            namespace=self._namespace,
            node_name=self._name,
            topic=fq_name,
            dds_type=dds_type,
            type_hash=type_hash,
            qos=qos,
        )

    # -- entities ----------------------------------------------------------------------------

    def _add(self, entity: Entity) -> Any:
        with self._lock:
            self._entities.append(entity)
        self._wake()
        return entity

    def create_publisher(
        self,
        msg_type: Any,
        topic: str,
        qos_profile: QoSProfile | int,
        *,
        callback_group: CallbackGroup | None = None,
        event_callbacks: Any = None,
        qos_overriding_options: Any = None,
        publisher_class: Any = None,
    ) -> Publisher:
        support = message_support(type_name_of(msg_type))
        return self._add(
            Publisher(
                self,
                support,
                self.resolve_topic_name(topic),
                qos_from(qos_profile),
                callback_group,
            )
        )

    def create_subscription(
        self,
        msg_type: Any,
        topic: str,
        callback: Callable[[Any], None],
        qos_profile: QoSProfile | int,
        *,
        callback_group: CallbackGroup | None = None,
        event_callbacks: Any = None,
        qos_overriding_options: Any = None,
        raw: bool = False,
    ) -> Subscription:
        support = message_support(type_name_of(msg_type))
        return self._add(
            Subscription(
                self,
                support,
                self.resolve_topic_name(topic),
                callback,
                qos_from(qos_profile),
                callback_group,
                raw,
            )
        )

    def create_service(
        self,
        srv_type: Any,
        srv_name: str,
        callback: Callable[[Any, Any], Any],
        *,
        qos_profile: QoSProfile = qos_profile_services_default,
        callback_group: CallbackGroup | None = None,
    ) -> Service:
        support = service_support(type_name_of(srv_type))
        return self._add(
            Service(
                self,
                support,
                self.resolve_service_name(srv_name),
                callback,
                qos_profile,
                callback_group,
            )
        )

    def create_client(
        self,
        srv_type: Any,
        srv_name: str,
        *,
        qos_profile: QoSProfile = qos_profile_services_default,
        callback_group: CallbackGroup | None = None,
    ) -> Client:
        support = service_support(type_name_of(srv_type))
        return self._add(
            Client(self, support, self.resolve_service_name(srv_name), qos_profile, callback_group)
        )

    def create_timer(
        self,
        timer_period_sec: float,
        callback: Callable[[], Any],
        callback_group: CallbackGroup | None = None,
        clock: Any = None,
        autostart: bool = True,
    ) -> Timer:
        return self._add(Timer(self, timer_period_sec, callback, callback_group, autostart))

    def create_guard_condition(
        self, callback: Callable[[], Any], callback_group: CallbackGroup | None = None
    ) -> GuardCondition:
        return self._add(GuardCondition(self, callback, callback_group))

    def create_rate(self, frequency: float, clock: Any = None) -> Rate:
        return Rate(frequency)

    def _destroy(self, entity: Any) -> bool:
        with self._lock:
            if entity not in self._entities:
                return False
            self._entities.remove(entity)
        entity.destroy()
        return True

    destroy_publisher = destroy_subscription = destroy_service = _destroy
    destroy_client = destroy_timer = destroy_guard_condition = _destroy

    def destroy_rate(self, rate: Rate) -> bool:
        return True

    @property
    def publishers(self) -> list[Publisher]:
        return [e for e in self._entities if isinstance(e, Publisher)]

    @property
    def subscriptions(self) -> list[Subscription]:
        return [e for e in self._entities if isinstance(e, Subscription)]

    @property
    def timers(self) -> list[Timer]:
        return [e for e in self._entities if isinstance(e, Timer)]

    @property
    def services(self) -> list[Service]:
        return [e for e in self._entities if isinstance(e, Service)]

    @property
    def clients(self) -> list[Client]:
        return [e for e in self._entities if isinstance(e, Client)]

    def destroy_node(self) -> None:
        for executor in list(self._executors):
            executor.remove_node(self)
        with self._lock:
            entities, self._entities = self._entities, []
        for entity in entities:
            entity.destroy()
        self.context.graph.delete(self._token_key)
        with contextlib.suppress(Exception):  # the session may already be closed
            self._token.undeclare()

    # -- executor plumbing ---------------------------------------------------------------------

    def entities(self) -> list[Entity]:
        with self._lock:
            return list(self._entities)

    def take_task(self) -> Work | None:
        try:
            return self._tasks.popleft()
        except IndexError:
            return None

    def schedule(self, work: Work) -> None:
        """Run `work` on whichever executor spins this node (futures' done-callbacks, tasks)."""
        self._tasks.append(work)
        self._wake()

    def _wake(self) -> None:
        for executor in list(self._executors):
            executor.wake()

    # -- parameters ----------------------------------------------------------------------------

    def declare_parameter(
        self, name: str, value: Any = None, descriptor: Any = None, ignore_override: bool = False
    ) -> Parameter:
        return self._parameters.declare(name, value, descriptor, ignore_override)

    def declare_parameters(
        self, namespace: str, parameters: Sequence[tuple[Any, ...]], ignore_override: bool = False
    ) -> list[Parameter]:
        declared = []
        for entry in parameters:
            name = f"{namespace}.{entry[0]}" if namespace else entry[0]
            value = entry[1] if len(entry) > 1 else None
            descriptor = entry[2] if len(entry) > 2 else None
            declared.append(self.declare_parameter(name, value, descriptor, ignore_override))
        return declared

    def undeclare_parameter(self, name: str) -> None:
        self._parameters.get(name)
        self._parameters.values.pop(name, None)
        self._parameters.descriptors.pop(name, None)

    def has_parameter(self, name: str) -> bool:
        return name in self._parameters.values

    def get_parameter(self, name: str) -> Parameter:
        return self._parameters.get(name)

    def get_parameter_or(self, name: str, alternative_value: Parameter | None = None) -> Any:
        if name in self._parameters.values:
            return self._parameters.values[name]
        return alternative_value or Parameter(name, Parameter.Type.NOT_SET, None)

    def get_parameters(self, names: Sequence[str]) -> list[Parameter]:
        return [self.get_parameter(name) for name in names]

    def get_parameters_by_prefix(self, prefix: str) -> dict[str, Parameter]:
        prefix = prefix + "." if prefix else ""
        return {
            name[len(prefix) :]: parameter
            for name, parameter in self._parameters.values.items()
            if name.startswith(prefix)
        }

    def describe_parameter(self, name: str) -> Any:
        self._parameters.get(name)
        return self._parameters.descriptors[name]

    def set_parameters(self, parameter_list: Sequence[Parameter]) -> list[Any]:
        return self._parameters.set(parameter_list)

    def set_parameters_atomically(self, parameter_list: Sequence[Parameter]) -> Any:
        return self._parameters.set_atomically(parameter_list)

    def add_on_set_parameters_callback(self, callback: Callable[[list[Parameter]], Any]) -> None:
        self._parameters.on_set.insert(0, callback)

    def remove_on_set_parameters_callback(self, callback: Callable[..., Any]) -> None:
        self._parameters.on_set.remove(callback)

    def add_pre_set_parameters_callback(self, callback: Callable[..., Any]) -> None:
        self._parameters.pre_set.append(callback)

    def add_post_set_parameters_callback(self, callback: Callable[..., Any]) -> None:
        self._parameters.post_set.append(callback)

    @property
    def parameter_overrides(self) -> dict[str, Any]:
        return dict(self._parameters.overrides)

    # -- graph ---------------------------------------------------------------------------------

    def get_node_names(self) -> list[str]:
        return [name for name, _ in self.context.graph.node_names_and_namespaces()]

    def get_node_names_and_namespaces(self) -> list[tuple[str, str]]:
        return self.context.graph.node_names_and_namespaces()

    def get_topic_names_and_types(self, no_demangle: bool = False) -> list[tuple[str, list[str]]]:
        return self.context.graph.topic_names_and_types()

    def get_service_names_and_types(self) -> list[tuple[str, list[str]]]:
        return self.context.graph.service_names_and_types()

    def count_publishers(self, topic_name: str) -> int:
        return self.context.graph.count(wire.PUBLISHER, self.resolve_topic_name(topic_name))

    def count_subscribers(self, topic_name: str) -> int:
        return self.context.graph.count(wire.SUBSCRIPTION, self.resolve_topic_name(topic_name))

    def get_publishers_info_by_topic(self, topic_name: str, no_mangle: bool = False) -> list[Any]:
        return self.context.graph.endpoints_info(
            wire.PUBLISHER, self.resolve_topic_name(topic_name)
        )

    def get_subscriptions_info_by_topic(
        self, topic_name: str, no_mangle: bool = False
    ) -> list[Any]:
        return self.context.graph.endpoints_info(
            wire.SUBSCRIPTION, self.resolve_topic_name(topic_name)
        )
