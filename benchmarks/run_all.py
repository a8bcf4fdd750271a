"""Every benchmark in one go, with progress, then one combined ``results/summary.md``.

    python benchmarks/run_all.py            # the full set, about 40 minutes on 2 vCPUs
    python benchmarks/run_all.py --quick    # a few minutes: fewer rounds, shorter runs
    python benchmarks/run_all.py --only broadcast latency

Steps, in order (each a child process of this interpreter, bounded in time; one that fails
or overruns is reported and the next one runs):

* ``bench_capture.py``: what change capture costs a commit (``--rounds 2`` when quick);
* ``bench_broadcast.py``: six ways to broadcast over WebSocket (sqla_notify's hub in-process
  and through Redis among them), at 100, 1,000 and 5,000 clients, with stalled clients,
  one-notification latency and memory; writes the PNG plots;
* ``bench_broadcast.py --filtered``: filtered subscriptions (each client watching a forum of
  its own) against clients of the whole collection, server CPU per delivered frame, and per
  post to forums nobody watches;
* ``bench_latency.py``: commit to client through the hub, SQLite and PostgreSQL, sync and
  async sessions (``--quick`` when quick); writes the latency plot;
* ``bench_brokers.py``: in-process against Redis and PostgreSQL (its ``--quick``);
* ``bench_writer_start.py``: the hub's writers started 32 per loop step against all at once
  (``--rounds 1`` when quick).

A full run writes each script's usual ``results/<name>.json`` and ``.md`` and then
``results/summary.md``. A quick run leaves those alone: its files go to ``results/quick/``
(the previous full results are put back), with its own ``summary.md`` there.

While the steps run, other benchmark processes on the machine (not started by this run) are
looked for every few seconds and named in the summary: they share the two CPUs and make the
figures noisier.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"


@dataclass
class Step:
    name: str
    script: str
    quick: list[str]  # its flags in a quick run (a full run: none)
    limit_full: float  # seconds
    limit_quick: float
    outputs: list[str]  # file names in results/
    flags: list[str] = field(default_factory=list)  # its flags in every run
    status: str = "not run"
    seconds: float = 0.0
    written: list[str] = field(default_factory=list)


STEPS = [
    Step("capture", "bench_capture.py", ["--rounds", "2"], 20 * 60, 6 * 60, ["capture.json", "capture.md"]),
    Step(
        "broadcast", "bench_broadcast.py", ["--quick"], 50 * 60, 12 * 60,
        ["broadcast.json", "broadcast.md", "broadcast-throughput.png", "broadcast-one-broadcast.png"],
    ),
    Step(
        "filtered", "bench_broadcast.py", ["--quick"], 20 * 60, 5 * 60,
        ["broadcast-filtered.json", "broadcast-filtered.md"], flags=["--filtered"],
    ),
    Step("latency", "bench_latency.py", ["--quick"], 8 * 60, 3 * 60, ["latency.json", "latency.md", "latency-cdf.png"]),
    Step("brokers", "bench_brokers.py", ["--quick"], 15 * 60, 5 * 60, ["brokers.json", "brokers.md"]),
    Step(
        "writer-start", "bench_writer_start.py", ["--rounds", "1"], 5 * 60, 3 * 60,
        ["writer-start.json", "writer-start.md"],
    ),
]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Watcher(threading.Thread):
    """Notes benchmark processes on this machine that this run did not start."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: dict[int, str] = {}
        self.stop = threading.Event()

    def _ours(self, pid: int) -> bool:
        me = os.getpid()
        for _ in range(64):  # walk up the parents
            if pid == me:
                return True
            try:
                with open(f"/proc/{pid}/stat") as f:
                    pid = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                return False
            if pid <= 1:
                return False
        return False

    def scan(self) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in self.seen:
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            benchmark = ("bench_" in cmdline or "_server:app" in cmdline) and "run_all.py" not in cmdline
            if benchmark and not self._ours(int(entry)):
                self.seen[int(entry)] = cmdline.strip()[:160]
                _log(f"   (note: another benchmark process is running: pid {entry}: {self.seen[int(entry)]})")

    def run(self) -> None:
        while not self.stop.wait(5):
            self.scan()


def _snapshot(names: list[str]) -> dict[str, bytes | None]:
    return {n: (RESULTS / n).read_bytes() if (RESULTS / n).exists() else None for n in names}


def run_step(step: Step, quick: bool, index: int, total: int) -> None:
    args = [sys.executable, str(HERE / step.script), *step.flags, *(step.quick if quick else [])]
    limit = step.limit_quick if quick else step.limit_full
    _log(f"[{index}/{total}] {step.name}: {' '.join(args[1:])} (at most {limit / 60:.0f} min)")
    before = _snapshot(step.outputs)
    started = time.monotonic()
    proc = subprocess.Popen(args, cwd=HERE.parent, start_new_session=True)
    try:
        rc = proc.wait(limit)
        step.status = "ok" if rc == 0 else f"failed (exit code {rc})"
    except KeyboardInterrupt:  # the step has its own session: Ctrl-C does not reach it
        os.killpg(proc.pid, 2)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        raise
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 15)  # its own session: the step and the servers it started
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        step.status = f"stopped after {limit / 60:.0f} min"
    step.seconds = time.monotonic() - started
    after = _snapshot(step.outputs)
    step.written = [n for n in step.outputs if after[n] is not None and after[n] != before[n]]
    if quick:  # keep the full results where they were; the quick ones go to results/quick/
        (RESULTS / "quick").mkdir(parents=True, exist_ok=True)
        for n in step.written:
            shutil.move(RESULTS / n, RESULTS / "quick" / n)
            if before[n] is not None:
                (RESULTS / n).write_bytes(before[n])  # type: ignore[arg-type]
    _log(f"[{index}/{total}] {step.name}: {step.status} in {step.seconds:.0f} s; wrote {', '.join(step.written) or 'nothing'}")


def _section(step: Step, where: Path) -> list[str]:
    lines = [f"## {step.name} (`{step.script}`): {step.status}, {step.seconds / 60:.1f} min", ""]
    md = next((n for n in step.written if n.endswith(".md")), None)
    if md is None:
        return lines + ["No results from this step in this run.", ""]
    text = (where / md).read_text().strip().splitlines()
    if text and text[0].startswith("# "):  # the script's own title: keep it as a line
        text[0] = f"*{text[0][2:]}*"
    lines += [line if not line.startswith("#") else "#" + line for line in text] + [""]
    for png in (n for n in step.written if n.endswith(".png")):
        lines += [f"![{png}]({png})", ""]
    return lines


def write_summary(steps: list[Step], quick: bool, started: float, watcher: Watcher, argv: list[str]) -> Path:
    where = RESULTS / "quick" if quick else RESULTS
    where.mkdir(parents=True, exist_ok=True)
    total = time.monotonic() - started
    lines = [
        f"# Benchmark summary ({time.strftime('%Y-%m-%d %H:%M:%S %Z')}{', quick' if quick else ''})",
        "",
        f"`python benchmarks/run_all.py {' '.join(argv)}`".replace("  ", " ").replace(" `", "`"),
        (
            f"on Python {platform.python_version()}, {platform.platform()}, {os.cpu_count()} CPUs; "
            f"{total / 60:.1f} min in all. Every table gives medians with the min–max over repeated rounds "
            "(the scripts' docstrings and `benchmarks/README.md` describe the methods)."
        ),
        "",
        "| step | status | minutes | files |",
        "|---|---|---:|---|",
    ]
    for s in steps:
        lines.append(f"| {s.name} | {s.status} | {s.seconds / 60:.1f} | {', '.join(s.written) or '–'} |")
    lines.append("")
    if watcher.seen:
        lines += [
            "**Noise:** other benchmark processes ran on this machine during this run, sharing its CPUs:",
            "",
            *(f"- pid {pid}: `{cmd}`" for pid, cmd in sorted(watcher.seen.items())),
            "",
        ]
    else:
        lines += ["No other benchmark process was seen on the machine during this run.", ""]
    for s in steps:
        lines += _section(s, where)
    path = where / "summary.md"
    path.write_text("\n".join(lines))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes; results go to results/quick/")
    parser.add_argument("--only", nargs="+", choices=[s.name for s in STEPS], help="run only these steps")
    args = parser.parse_args()
    steps = [s for s in STEPS if not args.only or s.name in args.only]
    started = time.monotonic()
    watcher = Watcher()
    watcher.scan()
    watcher.start()
    try:
        for i, step in enumerate(steps, 1):
            run_step(step, args.quick, i, len(steps))
    except KeyboardInterrupt:
        _log("interrupted: writing the summary of what ran")
    finally:
        watcher.stop.set()
    path = write_summary(steps, args.quick, started, watcher, sys.argv[1:])
    _log(f"\nwrote {path} ({(time.monotonic() - started) / 60:.1f} min)")


if __name__ == "__main__":
    main()
