"""Measuring helpers the benchmark scripts share: percentiles, CPU time from /proc, ports."""

from __future__ import annotations

import os
import socket

CLK_TCK = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """The value below which a share ``q`` of ``values`` lies (nearest rank, no interpolation)."""
    return quantiles(values, [q])[0]


def quantiles(values: list[float], qs: list[float]) -> list[float]:
    """:func:`percentile` at each of ``qs``, sorting once; empty if ``values`` is."""
    ordered = sorted(values)
    return [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in qs] if ordered else []


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process so far, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu() -> tuple[float, float, float, float]:
    """The machine's CPU seconds since boot: (busy, of which in interrupts, stolen, total)."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    busy = user + nice + system + irq + softirq
    return busy / CLK_TCK, (irq + softirq) / CLK_TCK, steal / CLK_TCK, (busy + idle + iowait + steal) / CLK_TCK


def own_cpu() -> float:
    """CPU seconds (user + system) of this process so far."""
    t = os.times()
    return t.user + t.system


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
