"""A second "host" on this machine for the benchmarks: a Linux network namespace (``ip netns``,
needs root) linked to this one by a veth pair.

The database, broker, relay and sinks listen on loopback only (and the relay allows plain
AUTH only to a loopback peer), so socat bridges the link: each ``outward`` port is forwarded
from the namespace's loopback to this host's loopback (a process inside reaches PostgreSQL at
127.0.0.1:5432 as usual), and each ``inward`` port from the namespace's link address to the
namespace's loopback (a client here reaches a server inside at ``Host.address``, and the
server sees a loopback peer). The forwarders add a hop each way, as a real network would.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Link:
    """Names and addresses of one namespace; benchmarks that may run at the same time use
    different ones."""

    netns: str
    host_dev: str
    ns_dev: str
    host_ip: str
    ns_ip: str  # both in one /30


@dataclass(frozen=True)
class Host:
    netns: str
    address: str  # where this host reaches the namespace (its ``inward`` ports)

    def command(self, cmd: Sequence[str]) -> list[str]:
        """``cmd`` run inside the namespace."""
        return ["ip", "netns", "exec", self.netns, *cmd]


def available() -> str:
    """'' when a namespace can be made here, else why not."""
    import os

    if os.geteuid() != 0:
        return "needs root (ip netns)"
    missing = [tool for tool in ("ip", "socat") if shutil.which(tool) is None]
    return f"{', '.join(missing)} not installed" if missing else ""


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def _forward(cmd_prefix: list[str], listen: str, port: int, to: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*cmd_prefix, "socat", f"TCP-LISTEN:{port},bind={listen},fork,reuseaddr", f"TCP:{to}"],
        stderr=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def second_host(link: Link, outward: Sequence[int], inward: Sequence[int] = ()) -> Iterator[Host]:
    """The namespace, up with its forwarders for as long as the block runs; removed after."""
    run(["ip", "netns", "add", link.netns])
    forwarders: list[subprocess.Popen[bytes]] = []
    host = Host(link.netns, link.ns_ip)
    inside = host.command([])
    try:
        run(["ip", "link", "add", link.host_dev, "type", "veth", "peer", "name", link.ns_dev])
        run(["ip", "link", "set", link.ns_dev, "netns", link.netns])
        run(["ip", "addr", "add", f"{link.host_ip}/30", "dev", link.host_dev])
        run(["ip", "link", "set", link.host_dev, "up"])
        run([*inside, "ip", "addr", "add", f"{link.ns_ip}/30", "dev", link.ns_dev])
        run([*inside, "ip", "link", "set", link.ns_dev, "up"])
        run([*inside, "ip", "link", "set", "lo", "up"])
        for port in outward:
            forwarders.append(_forward([], link.host_ip, port, f"127.0.0.1:{port}"))
            forwarders.append(_forward(inside, "127.0.0.1", port, f"{link.host_ip}:{port}"))
        for port in inward:
            forwarders.append(_forward(inside, link.ns_ip, port, f"127.0.0.1:{port}"))
        time.sleep(0.5)  # socat binds
        yield host
    finally:
        for proc in forwarders:
            proc.terminate()
            proc.wait(5)
        subprocess.run(["ip", "link", "del", link.host_dev], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", link.netns], check=False, capture_output=True)
