"""jobs/demo.py and jobs/raft.py run as real Ray jobs on a head these tests start and stop themselves.

Theory of operation: the slow test does what a user does against a cluster,
on one machine. It starts a private head with ``ray start --head --block`` in
a new session (``start_new_session=True``), with its own ports and its own
``--temp-dir``, so it neither joins nor disturbs any other Ray on the machine
(the shared ``ray_session`` one included). It submits ``python jobs/demo.py``
through the Jobs REST API with the repository as ``working_dir``, waits for a
terminal status, and reads the logs. To stop the head it never runs
``ray stop`` (that stops every Ray on the machine): it sends SIGTERM to the
``ray start --block`` process, which tears its own node down, then kills
whatever is left in the session it created (Ray's workers have their own
process groups but keep the session id), and checks that Ray processes
outside that session are still alive. The two jobs share one head (a
module-scoped fixture), so the head starts once; the checks that it stopped
completely, and only itself, run when the fixture tears it down. The fast
tests pin the argument policy of both jobs and their calls into
``ddia_ray.cli.main`` with a stand-in CLI.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import runpy
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_JOB = REPO_ROOT / "jobs" / "demo.py"
RAFT_JOB = REPO_ROOT / "jobs" / "raft.py"
REPLICATE_JOB = REPO_ROOT / "jobs" / "replicate.py"
PARTITION_JOB = REPO_ROOT / "jobs" / "partition.py"
EVENTS_JOB = REPO_ROOT / "jobs" / "events.py"
CONFLICTS_JOB = REPO_ROOT / "jobs" / "conflicts.py"

#: Patterns left out of the uploaded working_dir (caches and build output).
WORKING_DIR_EXCLUDES = [
    ".git", "**/__pycache__", ".pytest_cache", ".hypothesis", "*.egg-info", "build", "dist", ".venv",
]

_HEAD_START_TIMEOUT_S = 120.0
_JOB_TIMEOUT_S = 300.0
_HEAD_STOP_TIMEOUT_S = 60.0
_POLL_INTERVAL_S = 0.5
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _ray_cli() -> str | None:
    """The `ray` executable next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name("ray")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("ray")


def _load_job_module(path: Path = DEMO_JOB) -> types.ModuleType:
    """Import a job script as a module without running its ``__main__`` block."""
    spec = importlib.util.spec_from_file_location(f"ddia_ray_jobs_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_demo_module() -> types.ModuleType:
    """Import jobs/demo.py as a module without running its ``__main__`` block."""
    return _load_job_module(DEMO_JOB)


# --- fast: the job's argument policy and its call into the CLI ---------------------


def test_job_adds_no_progress_to_whatever_the_user_passed():
    demo = _load_demo_module()
    assert demo.job_args([], {}) == ["--no-progress"]
    assert demo.job_args(["--requests", "200"], {}) == ["--requests", "200", "--no-progress"]
    assert demo.job_args(["--no-progress", "--seed", "3"], {}) == ["--no-progress", "--seed", "3"]
    assert demo.job_args(["--seed", "3"], {demo.PROGRESS_ENV_VAR: "1"}) == ["--seed", "3"]
    assert demo.job_args([], {demo.PROGRESS_ENV_VAR: "0"}) == ["--no-progress"]


@settings(max_examples=60, deadline=None)
@given(
    args=st.lists(st.sampled_from(["--requests", "--replicas", "--seed", "--no-progress", "7", "200", "x"])),
    progress=st.sampled_from([None, "0", "1", ""]),
)
def test_job_args_keep_the_users_arguments_in_order(args, progress):
    demo = _load_demo_module()
    environ = {} if progress is None else {demo.PROGRESS_ENV_VAR: progress}
    out = demo.job_args(args, environ)
    if progress == "1":
        assert out == args  # the opt-in leaves the user's arguments alone
    else:
        assert out[: len(args)] == args  # nothing dropped or reordered
        assert out.count("--no-progress") == max(1, args.count("--no-progress"))


def test_job_calls_the_cli_demo_and_exits_with_its_status(monkeypatch):
    calls = []

    def fake_main(argv):
        calls.append(list(argv))
        return 3

    # A stand-in for ddia_ray.cli so the wiring is checked without the real demo.
    monkeypatch.setitem(sys.modules, "ddia_ray.cli", types.SimpleNamespace(main=fake_main))
    monkeypatch.setattr(sys, "argv", [str(DEMO_JOB), "--requests", "5", "--seed", "1"])
    monkeypatch.delenv("DDIA_RAY_JOB_PROGRESS", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(DEMO_JOB), run_name="__main__")
    assert exit_info.value.code == 3
    assert calls == [["demo", "--requests", "5", "--seed", "1", "--no-progress"]]


@pytest.mark.parametrize("path", [DEMO_JOB, RAFT_JOB, REPLICATE_JOB, PARTITION_JOB, EVENTS_JOB, CONFLICTS_JOB],
                         ids=["demo", "raft", "replicate", "partition", "events", "conflicts"])
def test_every_job_shares_the_argument_policy(path):
    job = _load_job_module(path)
    assert job.PROGRESS_ENV_VAR == "DDIA_RAY_JOB_PROGRESS"
    assert job.job_args(["--seed", "4"], {}) == ["--seed", "4", "--no-progress"]
    assert job.job_args(["--seed", "4", "--no-progress"], {}) == ["--seed", "4", "--no-progress"]
    assert job.job_args([], {job.PROGRESS_ENV_VAR: "1"}) == []


def test_replicate_job_calls_the_cli_replicate_and_exits_with_its_status(monkeypatch):
    calls = []

    def fake_main(argv):
        calls.append(list(argv))
        return 1  # as `ddia-ray replicate` does when an acknowledged write went missing

    monkeypatch.setitem(sys.modules, "ddia_ray.cli", types.SimpleNamespace(main=fake_main))
    monkeypatch.setattr(sys, "argv", [str(REPLICATE_JOB), "--mode", "async", "--schedule", "kill-leader"])
    monkeypatch.delenv("DDIA_RAY_JOB_PROGRESS", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPLICATE_JOB), run_name="__main__")
    assert exit_info.value.code == 1
    assert calls == [["replicate", "--mode", "async", "--schedule", "kill-leader", "--no-progress"]]


def test_partition_job_calls_the_cli_partition_and_exits_with_its_status(monkeypatch):
    calls = []

    def fake_main(argv):
        calls.append(list(argv))
        return 1  # as `ddia-ray partition` does when a loaded key reads back stale

    monkeypatch.setitem(sys.modules, "ddia_ray.cli", types.SimpleNamespace(main=fake_main))
    monkeypatch.setattr(sys, "argv", [str(PARTITION_JOB), "--groups", "3", "--fault", "partition-leader"])
    monkeypatch.delenv("DDIA_RAY_JOB_PROGRESS", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(PARTITION_JOB), run_name="__main__")
    assert exit_info.value.code == 1
    assert calls == [["partition", "--groups", "3", "--fault", "partition-leader", "--no-progress"]]


def test_events_job_calls_the_cli_events_and_exits_with_its_status(monkeypatch):
    calls = []

    def fake_main(argv):
        calls.append(list(argv))
        return 1  # as `ddia-ray events` does when an acknowledged event is missing

    monkeypatch.setitem(sys.modules, "ddia_ray.cli", types.SimpleNamespace(main=fake_main))
    monkeypatch.setattr(sys, "argv", [str(EVENTS_JOB), "--clients", "8", "--schedule", "kill-leader"])
    monkeypatch.delenv("DDIA_RAY_JOB_PROGRESS", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(EVENTS_JOB), run_name="__main__")
    assert exit_info.value.code == 1
    assert calls == [["events", "--clients", "8", "--schedule", "kill-leader", "--no-progress"]]


def test_conflicts_job_calls_the_cli_conflicts_and_exits_with_its_status(monkeypatch):
    calls = []

    def fake_main(argv):
        calls.append(list(argv))
        return 1  # as `ddia-ray conflicts` does when a write is lost under a resolution that must keep it

    monkeypatch.setitem(sys.modules, "ddia_ray.cli", types.SimpleNamespace(main=fake_main))
    monkeypatch.setattr(sys, "argv", [str(CONFLICTS_JOB), "--regions", "us,eu", "--protocol", "leaderless"])
    monkeypatch.delenv("DDIA_RAY_JOB_PROGRESS", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(CONFLICTS_JOB), run_name="__main__")
    assert exit_info.value.code == 1
    assert calls == [["conflicts", "--regions", "us,eu", "--protocol", "leaderless", "--no-progress"]]


def test_raft_job_calls_the_cli_raft_and_exits_with_its_status(monkeypatch):
    calls = []

    def fake_main(argv):
        calls.append(list(argv))
        return 1  # as `ddia-ray raft` does for a non-linearizable history

    monkeypatch.setitem(sys.modules, "ddia_ray.cli", types.SimpleNamespace(main=fake_main))
    monkeypatch.setattr(sys, "argv", [str(RAFT_JOB), "--members", "5", "--schedule", "kill-leader"])
    monkeypatch.delenv("DDIA_RAY_JOB_PROGRESS", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(RAFT_JOB), run_name="__main__")
    assert exit_info.value.code == 1
    assert calls == [["raft", "--members", "5", "--schedule", "kill-leader", "--no-progress"]]


# --- slow: real jobs on a private head -----------------------------------------------


@dataclass(frozen=True)
class _Head:
    """A running private head: where its Jobs API is, how to authenticate, the session its processes share."""

    dashboard_url: str
    headers: dict
    session_id: int


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free right now (held open together so they differ)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def _processes() -> list[tuple[int, int, str]]:
    """(pid, session id, command line) of every live, non-zombie process (Linux /proc; elsewhere none)."""
    found = []
    if not os.path.isdir("/proc"):
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited while we looked
        # Fields after the parenthesised name: state ppid pgrp session ...
        state, _ppid, _pgrp, session = stat.rsplit(")", 1)[1].split()[:4]
        if state != "Z":
            found.append((int(entry), int(session), cmdline))
    return found


def _session_members(session_id: int) -> list[int]:
    """Live processes of the session the head was started in."""
    return [pid for pid, session, _ in _processes() if session == session_id]


def _other_raylets(session_id: int) -> list[int]:
    """Raylets that belong to some other Ray on this machine (must survive our stop)."""
    return [pid for pid, session, cmd in _processes() if session != session_id and "/raylet " in f"{cmd} "]


def _wait_for_jobs_api(url: str, headers: dict, head: subprocess.Popen, log_path: Path):
    """Return a JobSubmissionClient once the head's Jobs API answers; fail if the head dies first."""
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + _HEAD_START_TIMEOUT_S
    while True:
        if head.poll() is not None:
            pytest.fail(f"ray start exited with {head.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            return JobSubmissionClient(url, headers=headers)  # its constructor already calls the API
        except Exception:  # ConnectionError / RuntimeError while the dashboard boots
            if time.monotonic() > deadline:
                pytest.fail(f"Jobs API at {url} not up after {_HEAD_START_TIMEOUT_S} s:\n"
                            f"{log_path.read_text()[-3000:]}")
            time.sleep(_POLL_INTERVAL_S)  # awaiting a condition, not synchronising


def _stop_head(head: subprocess.Popen, session_id: int) -> None:
    """Stop this head only: SIGTERM to `ray start --block`, then kill the rest of its session."""
    if head.poll() is None:
        # --block turns SIGTERM into a shutdown of its own node (GCS, raylet, dashboard, ...).
        # Signalling the whole group instead makes it hang, so only the leader gets it.
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=_HEAD_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
    deadline = time.monotonic() + 15.0
    while _session_members(session_id) and time.monotonic() < deadline:
        time.sleep(_POLL_INTERVAL_S)  # workers exit on their own once the raylet is gone
    for pid in _session_members(session_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if not os.path.isdir("/proc"):  # no session view: at least the head's own process group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(session_id, signal.SIGKILL)


@contextlib.contextmanager
def _private_head(ray_cli: str):
    """Run a head of our own for the duration of the block; always stop it (and only it)."""
    # Short path on purpose: Ray's unix sockets live under it (108-byte limit).
    temp_dir = tempfile.mkdtemp(prefix="ddia-job-", dir="/tmp")
    gcs_port, dashboard_port, client_port, agent_port = _free_ports(4)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    # RAY_ADDRESS removed: the head must never join another cluster. Auth is
    # explicit: Ray turns token auth on by itself whenever ~/.ray/auth_token
    # exists, so the head gets a throwaway token of its own (inherited by the
    # job's driver) and the client sends it; nothing depends on that file.
    token = secrets.token_hex(32)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    headers = {"Authorization": f"Bearer {token}"}
    # The job's `python` must be this interpreter (it has ray and the test deps).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    command = [
        ray_cli, "start", "--head", "--block",
        f"--port={gcs_port}", f"--dashboard-port={dashboard_port}",
        f"--ray-client-server-port={client_port}", f"--dashboard-agent-listen-port={agent_port}",
        "--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        "--disable-usage-stats", f"--temp-dir={temp_dir}",
    ]
    log_path = Path(temp_dir) / "ray-start.log"
    try:
        with open(log_path, "w", encoding="utf-8") as log:
            head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                url = f"http://127.0.0.1:{dashboard_port}"
                _wait_for_jobs_api(url, headers, head, log_path)
                yield _Head(dashboard_url=url, headers=headers, session_id=head.pid)
            finally:
                _stop_head(head, session_id=head.pid)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)  # failures already quote the log


def _wait_for_terminal_status(client, job_id: str):
    """Poll the job's status until it is terminal; fail after _JOB_TIMEOUT_S."""
    deadline = time.monotonic() + _JOB_TIMEOUT_S
    while True:
        status = client.get_job_status(job_id)
        if status.is_terminal():
            return status
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            pytest.fail(f"job {job_id} still {status} after {_JOB_TIMEOUT_S} s:\n"
                        f"{client.get_job_logs(job_id)[-3000:]}")
        time.sleep(_POLL_INTERVAL_S)  # awaiting a condition, not synchronising


@dataclass(frozen=True)
class _JobRun:
    """How a submitted job ended and what it printed (ANSI colours removed)."""

    status: object
    logs: str


@pytest.fixture(scope="module")
def private_head():
    """One private head for every real job in this module; on teardown, check it stopped completely and alone."""
    ray_cli = _ray_cli()
    if ray_cli is None:
        pytest.skip("the `ray` command-line tool is not installed")
    with _private_head(ray_cli) as head:
        raylets_before = _other_raylets(head.session_id)
        yield head
    # Stopped completely, and only ours: other Ray instances on this machine live on.
    assert _session_members(head.session_id) == []
    live = {pid for pid, _, _ in _processes()}
    assert set(raylets_before) <= live, "stopping our head stopped another Ray on this machine"


def _last_line(logs: str) -> str:
    """The job's own last line: Ray may append its processes' lines to a job's log after the driver's last
    one (``(raylet) ... Failed to send wait complete`` as the workers shut down), each tagged ``(name)``."""
    mine = [line for line in logs.rstrip().splitlines() if line.strip() and not line.lstrip().startswith("(")]
    return mine[-1] if mine else ""


def _run_job(head: _Head, entrypoint: str) -> _JobRun:
    """Submit ``entrypoint`` with the repository as working_dir, wait until it ends, return status and logs."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(head.dashboard_url, headers=head.headers)
    job_id = client.submit_job(
        entrypoint=entrypoint,
        runtime_env={
            "working_dir": str(REPO_ROOT),
            "excludes": WORKING_DIR_EXCLUDES,
            # Ray already puts the uploaded working_dir first on PYTHONPATH;
            # the checkout is a fallback for a package that is not pip-installed.
            "env_vars": {"PYTHONPATH": str(REPO_ROOT)},
        },
    )
    status = _wait_for_terminal_status(client, job_id)
    return _JobRun(status, _ANSI_ESCAPE.sub("", client.get_job_logs(job_id)))


# The first test to run also starts the head, the last one also stops it: each gets the whole budget.
_SLOW_JOB_TIMEOUT_S = _HEAD_START_TIMEOUT_S + _JOB_TIMEOUT_S + 2 * _HEAD_STOP_TIMEOUT_S


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(_SLOW_JOB_TIMEOUT_S)
def test_demo_job_succeeds_without_losing_requests(private_head):
    from ray.job_submission import JobStatus

    run = _run_job(private_head, "python jobs/demo.py --requests 200 --no-progress")
    assert run.status == JobStatus.SUCCEEDED, run.logs[-3000:]
    lost = re.findall(r"^\s*requests lost: (\d+)\s*$", run.logs, flags=re.MULTILINE)
    assert lost, f"no 'requests lost: <n>' line in the job's logs:\n{run.logs[-3000:]}"
    assert lost[-1] == "0", run.logs[-3000:]


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(_SLOW_JOB_TIMEOUT_S)
def test_raft_job_succeeds_and_ends_linearizable(private_head):
    from ray.job_submission import JobStatus

    # No --no-progress here: jobs/raft.py must add it (a bar would leave frames in the log).
    run = _run_job(private_head, "python jobs/raft.py --duration-s 6 --schedule kill-leader --seed 2")
    assert run.status == JobStatus.SUCCEEDED, run.logs[-3000:]
    assert _last_line(run.logs) == "linearizable: yes", run.logs[-3000:]
    assert re.search(r"^\s*elections seen\s+[1-9]\d*$", run.logs, flags=re.MULTILINE), run.logs[-3000:]
    assert "━" not in run.logs, "a progress bar was drawn into the job's log"
