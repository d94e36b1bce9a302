"""`vla-runtime router`: the Zenoh router nodes connect to for discovery (rmw_zenohd's role)."""

from __future__ import annotations

import argparse
import signal
import threading

from vla_runtime.ros.zenoh.config import (
    ConfigError,
    SessionSettings,
    open_session,
    router_config,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        action="append",
        metavar="ENDPOINT",
        help="endpoint to listen on (repeatable); default: $VLA_RUNTIME_ROUTER or "
        "tcp/127.0.0.1:7447 (loopback only: pass e.g. tcp/192.168.1.10:7447 to reach other "
        "hosts on a lab network, ideally with TLS via ZENOH_ROUTER_CONFIG_URI)",
    )


def run(args: argparse.Namespace) -> int:
    settings = SessionSettings.from_environ()
    listen = args.listen or [settings.router_endpoint]
    try:
        session = open_session(router_config(settings, listen))
    except ConfigError as exc:
        print(f"vla-runtime router: {exc}")
        return 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(
        f"router {session.zid()} listening on {', '.join(listen)} "
        f"(domain {settings.domain_id}; Ctrl-C to stop)",
        flush=True,
    )
    stop.wait()
    session.close()
    return 0
