"""Small helpers shared by the benchmark scripts: loopback-only runs, ports, children, machine."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Set in the environment of a run that already lives in its private network namespace.
NETNS_ENV = "VLA_BENCH_IN_NETNS"


def in_private_netns() -> bool:
    return bool(os.environ.get(NETNS_ENV))


def reexec_in_private_netns(script: Path, argv: list[str]) -> None:
    """Re-run `script argv` inside `unshare -n` with only `lo` up; return if that is impossible
    (no unshare, no permission), after saying so on stderr, so the caller runs on the host."""
    if in_private_netns():
        return
    if shutil.which("unshare") is None:
        print("note: unshare not found; running on the host loopback", file=sys.stderr)
        return
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        print(
            f"note: no private network namespace ({probe.stderr.strip()[:120]}); "
            "running on the host loopback",
            file=sys.stderr,
        )
        return
    command = ["sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable, str(script)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe("unshare", ["unshare", "-n", *command, *argv], {**os.environ, NETNS_ENV: "1"})


def child_env(**extra: str) -> dict[str, str]:
    """This environment with `src/` importable, unbuffered output and `extra` on top."""
    env = dict(os.environ)
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def stop_process(process: subprocess.Popen[str] | None, timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`; only the given child, never a process group."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, all threads [s]; NaN once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs, {model}, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def machine_busy_seconds() -> float:
    """CPU time every task on the machine has run since boot [s].

    The root cgroup's precise counter when there is one; otherwise /proc/stat, whose per-tick
    sampling misses periodic work that runs between ticks (a 250 Hz loop aliases with the tick).
    """
    for path, scale in (
        ("/sys/fs/cgroup/cpuacct/cpuacct.usage", 1e-9),  # cgroup v1 [ns]
        ("/sys/fs/cgroup/cpu.stat", 1e-6),  # cgroup v2 root: usage_usec
        ("/sys/fs/cgroup/unified/cpu.stat", 1e-6),  # hybrid layout
    ):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = Path(path).read_text().split()
            return (
                int(text[text.index("usage_usec") + 1] if "usage_usec" in text else text[0])
                * scale
            )
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(value) for value in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
