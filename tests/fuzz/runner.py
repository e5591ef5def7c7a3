"""Campaigns: a parent that runs a target's inputs in a bounded child process, and the child's loop.

Theory of operation
-------------------
Input ``i`` of campaign ``(target, seed)`` is a pure function of
``random.Random(f"{target}:{seed}:{i}")``, so one command replays it anywhere.

The **child** (:func:`child_main`) caps its address space with
``RLIMIT_AS`` (the memory bound: an input that expands too far raises
``MemoryError`` there, which is a foreign exception and so a failure), runs
inputs ``start..`` one at a time, times each one (the per-input bound of the
target), and writes one JSON line per failure and a summary at the end. Before
each input it records the input's number in a *status file*: if the child then
dies (SIGSEGV, SIGBUS, an OOM kill) or hangs past the subprocess timeout, the
parent knows which input did it.

The **parent** (:func:`campaign`) starts the child with a timeout, and after a
crash or a hang reports that input and starts a new child after it (at most
``max_restarts`` times), so one crashing input does not hide the rest.
Every failure carries its replay command.
"""

from __future__ import annotations

import json
import os
import re
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field

from ddia_ray.errors import DdiaRayError

from .targets import SetupError, Violation, get_target

__all__ = ["Failure", "CampaignResult", "run_input", "child_main", "campaign", "replay_command"]

MEMORY_MB_DEFAULT = 1024


def replay_command(target: str, seed: int, iteration: int) -> str:
    """The one-line command that replays input ``iteration`` of campaign ``(target, seed)``."""
    return f"python -m tests.fuzz replay --target {target} --seed {seed} --iteration {iteration}"


@dataclass
class Failure:
    """One failing input: what kind of failure, what happened, and how to replay it."""

    target: str
    seed: int
    iteration: int
    kind: str            # violation | foreign | wrong-error | slow | crash | timeout | setup
    message: str
    mutations: tuple = ()
    origin: str = ""     # which seed file or generator the input came from

    @property
    def replay(self) -> str:
        """The replay command of this input."""
        return replay_command(self.target, self.seed, self.iteration)

    def signature(self) -> str:
        """What makes two failures "the same defect" for the report: kind plus the message's first words."""
        words = " ".join(self.message.split()[:6])
        return f"{self.kind}: {re.sub(r'[0-9.]+', '#', words)}"

    def line(self) -> str:
        """One line for a test failure message."""
        return (f"[{self.target} seed={self.seed} iteration={self.iteration}] {self.kind}: {self.message} "
                f"| input: {self.origin} {' '.join(self.mutations)} | replay: {self.replay}")


@dataclass
class CampaignResult:
    """What a campaign did: inputs run, outcome counts, failures, the slowest input."""

    target: str
    seed: int
    inputs: int = 0
    outcomes: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    slowest: tuple = (0.0, -1, "")   # (seconds, iteration, input description)
    elapsed_s: float = 0.0
    restarts: int = 0

    def report(self) -> str:
        """A multi-line human summary (printed by the CLI and by failing tests)."""
        lines = [f"fuzz {self.target} seed={self.seed}: {self.inputs} inputs in {self.elapsed_s:.1f}s, "
                 f"outcomes {dict(sorted(self.outcomes.items()))}, slowest input {self.slowest[0] * 1000:.1f} ms "
                 f"(iteration {self.slowest[1]}: {self.slowest[2]})"]
        groups: dict = {}
        for f in self.failures:
            groups.setdefault(f.signature(), []).append(f)
        for sig, found in groups.items():  # one defect usually fails many inputs: show two of each
            lines.append(f"  {len(found)} x {sig} ...")
            lines += [f"    {f.line()}" for f in found[:2]]
        return "\n".join(lines)


def run_input(target, seed: int, iteration: int, *, dump: str | None = None, on_start=None, skip=()):
    """Run one input in this process; returns ``(outcome, seconds, Failure or None, description)``.

    ``on_start(description)`` is called once the input is built, before it runs. Inputs whose
    origin is in ``skip`` (a generator that already killed a child) are built but not run.
    """
    rng = random.Random(f"{target.name}:{seed}:{iteration}")
    origin, data, mutations = target.generate(rng)
    if origin.name in skip:
        return "skipped", 0.0, None, origin.name
    if dump:
        with open(dump, "wb") as f:
            f.write(data)
    described = f"{origin.name} {' '.join(mutations)} ({len(data)} bytes)"
    if on_start is not None:
        on_start(described)

    def failure(kind: str, message: str) -> Failure:
        return Failure(target.name, seed, iteration, kind, message, mutations, origin.name)

    start = time.perf_counter()
    fail, outcome = None, "ok"
    try:
        target.execute(origin, data)
    except Violation as e:
        fail, outcome = failure("violation", str(e)), "violation"
    except DdiaRayError as e:
        outcome = f"refused:{type(e).__name__}"
        if not isinstance(e, target.allowed):
            allowed = "/".join(t.__name__ for t in target.allowed)
            fail = failure("wrong-error", f"raised {type(e).__name__} (expected {allowed}): {e}")
    except (SetupError, KeyboardInterrupt):
        raise
    except BaseException as e:  # noqa: BLE001 -- anything else escaping a parser is the finding
        where = traceback.extract_tb(e.__traceback__)[-1]
        fail, outcome = failure("foreign", f"{type(e).__name__}: {str(e)[:300]} (at {os.path.basename(where.filename)}"
                                           f":{where.lineno} in {where.name})"), f"foreign:{type(e).__name__}"
    seconds = time.perf_counter() - start
    if fail is None and seconds > target.input_seconds:
        fail = failure("slow", f"took {seconds:.2f}s, over the {target.input_seconds}s bound per input")
    return outcome, seconds, fail, described


def _limit_memory(megabytes: int) -> None:
    limit = megabytes << 20
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def child_main(target_name: str, seed: int, start: int, count: int | None, seconds: float | None,
               status: str, out: str, memory_mb: int, skip: tuple = ()) -> int:
    """The child's loop (see the module docstring); returns the process exit code."""
    _limit_memory(memory_mb)
    target = get_target(target_name)
    with open(out, "a") as sink:
        try:
            target.seeds()
        except SetupError as e:
            sink.write(json.dumps({"setup": str(e)}) + "\n")
            return 0
        deadline = None if seconds is None else time.monotonic() + seconds
        outcomes, slowest, n = {}, (0.0, -1, ""), 0
        fd = os.open(status, os.O_WRONLY | os.O_CREAT, 0o644)
        i = start
        def summary() -> None:  # cumulative for this child: the parent keeps the last one it finds
            sink.write(json.dumps({"summary": {"inputs": n, "outcomes": outcomes, "slowest": list(slowest)}}) + "\n")
            sink.flush()

        while (count is None or i < start + count) and (deadline is None or time.monotonic() < deadline):
            def started(described: str, i=i) -> None:
                # Written with pwrite before the input runs: it survives our own crash (the kernel has it).
                line = f"{i:020d} {described}"[:4000].ljust(4000) + "\n"
                os.pwrite(fd, line.encode(), 0)

            outcome, dt, fail, described = run_input(target, seed, i, on_start=started, skip=skip)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if dt > slowest[0]:
                slowest = (dt, i, described)
            if fail is not None:
                sink.write(json.dumps({"failure": fail.__dict__ | {"mutations": list(fail.mutations)}}) + "\n")
                sink.flush()
            n += 1
            i += 1
            if n % 100 == 0:
                summary()
        os.close(fd)
        summary()
        sink.write(json.dumps({"done": True}) + "\n")
    return 0


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def campaign(target: str, seed: int, *, iterations: int | None = None, seconds: float | None = None,
             timeout_s: float = 120.0, memory_mb: int = MEMORY_MB_DEFAULT, max_restarts: int = 8,
             pythonpath: str | None = None) -> CampaignResult:
    """Run a campaign in child processes (see the module docstring); returns what it found."""
    result = CampaignResult(target, seed)
    began = time.monotonic()
    start, remaining = 0, iterations
    skip: set = set()  # generators that killed a child: one crash of each is reported, the rest skipped
    # The child imports ddia_ray from ``pythonpath`` (default: wherever this process would) and this
    # package from its repository; it runs in a scratch directory so the cwd shadows neither.
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH"), root) if p)
    with tempfile.TemporaryDirectory(prefix="ddia-fuzz-") as tmp:
        while True:
            status, out = os.path.join(tmp, f"status{start}"), os.path.join(tmp, f"out{start}.jsonl")
            left = None if seconds is None else max(0.0, seconds - (time.monotonic() - began))
            cmd = [sys.executable, "-m", "tests.fuzz", "child", "--target", target, "--seed", str(seed),
                   "--start", str(start), "--status", status, "--out", out, "--memory-mb", str(memory_mb)]
            cmd += ["--count", str(remaining)] if remaining is not None else []
            cmd += ["--seconds", f"{left:.3f}"] if left is not None else []
            for origin in sorted(skip):
                cmd += ["--skip", origin]
            crash = None
            try:
                proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout_s)
                if proc.returncode != 0:
                    how = _signal_name(proc.returncode) if proc.returncode < 0 else f"exit code {proc.returncode}"
                    tail = proc.stderr.strip()[-400:]
                    crash = ("crash", f"the child process died ({how})" + (f"; stderr: {tail}" if tail else ""))
            except subprocess.TimeoutExpired:
                crash = ("timeout", f"the child process did not finish within {timeout_s:.0f}s (killed)")
            recorded = _collect(result, out)
            if crash is None:
                break
            running = _read_status(status)
            if running is None:
                result.failures.append(Failure(target, seed, start, crash[0], crash[1] + " before its first input"))
                break
            at, described = running
            if described.startswith("gen:"):
                skip.add(described.split()[0])
            result.failures.append(Failure(target, seed, at, crash[0], crash[1] + " running this input",
                                           origin=described))
            lost = at - start - recorded  # inputs run after the child's last summary: outcomes unknown
            result.inputs += lost
            if lost:
                result.outcomes["unrecorded"] = result.outcomes.get("unrecorded", 0) + lost
            result.inputs += 1
            result.outcomes[crash[0]] = result.outcomes.get(crash[0], 0) + 1
            if result.restarts >= max_restarts or (remaining is not None and at + 1 >= start + remaining):
                break
            result.restarts += 1
            if remaining is not None:
                remaining -= at + 1 - start
            start = at + 1
    result.elapsed_s = time.monotonic() - began
    return result


def _read_status(path: str) -> tuple[int, str] | None:
    """``(input number, description)`` of the input the child was running, if it got that far."""
    try:
        with open(path) as f:
            number, _, described = f.read().strip().partition(" ")
        return int(number), described
    except (OSError, ValueError):
        return None


def _collect(result: CampaignResult, out: str) -> int:
    """Fold a child's JSON lines into ``result``; returns how many inputs its last summary covered."""
    last = None
    if os.path.exists(out):
        with open(out) as f:
            for line in f:
                try:
                    item = json.loads(line)
                except ValueError:
                    continue  # a line cut short by the child's death
                if "setup" in item:
                    result.failures.append(Failure(result.target, result.seed, -1, "setup", item["setup"]))
                elif "failure" in item:
                    d = item["failure"]
                    d["mutations"] = tuple(d["mutations"])
                    result.failures.append(Failure(**d))
                elif "summary" in item:
                    last = item["summary"]
    if last is None:
        return 0
    result.inputs += last["inputs"]
    for k, v in last["outcomes"].items():
        result.outcomes[k] = result.outcomes.get(k, 0) + v
    if last["slowest"][0] > result.slowest[0]:
        result.slowest = tuple(last["slowest"])
    return last["inputs"]
