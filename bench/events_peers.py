"""The peer side of ``bench/events.py``: pyeventsourcing (on SQLite and PostgreSQL) and Redis Streams.

Theory of operation: every peer is a real store on this machine, measured from this process.
Each run of a workload starts on a fresh store (a new SQLite file, a new PostgreSQL database, a
flushed Redis), writes whatever it reads first (untimed), then times only its measured part with
``time.perf_counter`` (and the client's CPU with ``time.process_time``); after the timer stops it
checks that the store holds what was written or delivered what it holds. A workload runs
``repeats`` times (5 by default) and its figures are those of the median run, every run's rate
kept beside them: on 2 cores another process (a test run, say) can slow any single run. Servers are started
here on free loopback ports with their files in a fresh temporary directory, and stopped and
removed afterwards. A peer that cannot run here is skipped with a message: each ``*_missing()``
says why (or returns None), and each ``bench_*`` function raises :class:`PeerUnavailable`.

Workloads (:data:`WORKLOADS`), every event carrying ``PAYLOAD_BYTES`` random bytes drawn from
``random.Random(seed)`` (the same bytes for every peer)::

    workload               what is timed                                           events
    single_appends         2,000 appends of one event, one after another, append i   2,000
                           to stream s-<i % 200> at its expected next version
    batched_appends        200 appends of 100 events, each to its own new stream     20,000
    stream_reads           read each of 200 streams of 100 events fully, in turn     20,000
    stream_reads_batched   the same 200 streams in one request (Redis only: a         20,000
                           pipeline of 200 XRANGEs; pyeventsourcing has no read of
                           many streams)
    all_reads              read the whole log from position 1 in pages of 1,000      20,000
                           (pyeventsourcing only: Redis has no log across streams)
    subscription_delivery  a subscriber takes pages of 1,000 from its tracked        20,000
                           position and records each page as done, until a read
                           comes back empty

**pyeventsourcing** (PyPI ``eventsourcing`` 9.x), used through its persistence layer as its
applications use it: ``InfrastructureFactory.construct(env)`` with ``PERSISTENCE_MODULE`` set to
``eventsourcing.sqlite`` (``SQLITE_DBNAME``: a file, never ``:memory:``) or
``eventsourcing.postgres`` (``POSTGRES_DBNAME``/``_HOST``/``_PORT``/``_USER``/``_PASSWORD``), every
other setting left at its default. The env is passed to ``construct`` as a mapping, as
``Application(env=...)`` does, so ``os.environ`` is neither read nor changed. Its
``application_recorder()`` takes ``StoredEvent(originator_id, originator_version, topic, state)``:

* an append is ``insert_events([...])``; the expected version is the ``originator_version`` we
  pass, which the table's primary key ``(originator_id, originator_version)`` refuses twice (an
  ``IntegrityError``), the optimistic concurrency check of an aggregate's ``save``;
* originator ids are UUIDs (its default ``ORIGINATOR_ID_TYPE``), ``uuid5`` of the stream name,
  as an application names an aggregate; versions start at 1 as an aggregate's do;
* a stream read is ``select_events(originator_id)``; a log read is ``select_notifications(start,
  1000)`` with the next ``start`` one past the last id returned;
* delivery follows its ``Follower.pull_and_process``: start from the tracking recorder's
  ``max_tracking_id``, then ``select_notifications(position, 1000, inclusive_of_start=False)``.
  The follower records a ``Tracking`` per event, in the transaction of the events its policy
  made; here one ``insert_tracking`` per page marks the page done, like Redis's one XACK per page
  (``track_every_event=True`` records one per event instead). Notifications are not decoded into
  domain events: their state is random bytes, not its JSON, and Redis hands back raw bytes too.

Durability of pyeventsourcing. SQLite: it switches the file to WAL and leaves ``synchronous`` at
SQLite's default, FULL (reported in the result), so every committed ``insert_events`` fsyncs the
WAL. PostgreSQL: a throwaway cluster (below) with ``fsync=on``, ``synchronous_commit=on``, its
defaults, so every commit waits for the WAL flush. Before each timed part the bench runs
``CHECKPOINT`` so no earlier write is flushed during it.

PostgreSQL cluster (:class:`_PostgresCluster`): ``initdb`` (superuser ``bench``, a random
password, scram-sha-256 for every connection) into a temporary directory, a free port written to
``postgresql.conf`` with ``listen_addresses = '127.0.0.1'`` and the socket directory inside the
temporary directory, started by ``pg_ctl start -w`` and stopped by ``pg_ctl stop -m fast``, after
which the directory is removed. PostgreSQL refuses to run as root; as root the bench runs
``initdb`` and ``pg_ctl`` through ``runuser -u postgres`` (the account Debian's postgresql
packages create) and gives that account the temporary directory, rather than creating a user.
Without that account or ``runuser`` the peer is skipped with a message. Each workload gets its
own ``CREATE DATABASE``.

**Redis Streams** (:class:`_RedisServer`, Debian's ``redis-server`` through ``redis-py``): started
with no config file, so persistence is Redis's built-in default, which Debian's packaged
``redis.conf`` keeps too: RDB snapshots ``save 3600 1 300 100 60 10000``, ``appendonly no``. An
acknowledged XADD is in memory only until the next snapshot. The result reports the server's
``CONFIG GET`` of both and the snapshots taken during each timed part: ``FLUSHALL`` before each
workload writes an empty snapshot and resets the 60 s clock, so a workload shorter than a minute
takes none. Entries are ``{type: b"Appended", data: <payload>}``.

* an append is one ``XADD`` with the explicit id ``0-<version>``: Redis refuses an id that is not
  above the stream's last, so a duplicate or stale version fails like pyeventsourcing's primary
  key (a gap is not caught; a real expected-version check needs a script);
* a batch is a pipeline (``transaction=False``) of 100 XADDs to one new stream, one round trip;
* a stream read is ``XRANGE key - +``;
* delivery: a consumer group created at ``0`` on one stream of 20,000 entries, one consumer
  calling ``XREADGROUP ... COUNT 1000 STREAMS key >`` and acknowledging each page with one
  ``XACK`` of its ids; afterwards XPENDING must report nothing pending.

Lifetimes: Redis runs in its own process group, started through ``setpriv --pdeathsig KILL`` when
util-linux has it, so the kernel kills it if this process dies; ``pg_ctl`` daemonizes the
postmaster, so a PostgreSQL cluster outlives a SIGKILL'd bench (its directory and pid file say
where). ``with`` blocks, ``finally`` and an ``atexit`` hook stop both.

Determinism: payloads and the order of every call come from ``seed``; timing is wall-clock.
Run alone: ``python bench/events_peers.py [--peer NAME ...] [--workload NAME ...] [--repeats N]
[--track-every-event] [--seed N] [--workdir DIR]``; it prints one table of events/s (the median
run, 3 significant digits), then each peer's settings and every workload's range of runs.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.metadata
import importlib.util
import math
import os
import platform
import random
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from ddia_ray.errors import InvalidArgumentError
from ddia_ray._validate import at_least, integer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from raft_peers import free_ports  # noqa: E402 - the sibling bench module, found through the line above
from replication_peers import redis_missing  # noqa: E402 - same check as the replication bench

__all__ = [
    "PAYLOAD_BYTES",
    "WORKLOADS",
    "PYES_WORKLOADS",
    "REDIS_WORKLOADS",
    "PEERS",
    "PeerUnavailable",
    "pyes_missing",
    "postgres_missing",
    "redis_missing",
    "bench_pyes_sqlite",
    "bench_pyes_postgres",
    "bench_redis_streams",
    "bench_all_peers",
    "main",
]

#: Every event's payload (pyeventsourcing's ``state``, Redis's ``data`` field) is this many bytes.
PAYLOAD_BYTES = 100
#: Every workload, in the order they run.
WORKLOADS = ("single_appends", "batched_appends", "stream_reads", "stream_reads_batched", "all_reads",
             "subscription_delivery")
#: The workloads pyeventsourcing runs: all but ``stream_reads_batched`` (it has no read of many streams).
PYES_WORKLOADS = tuple(w for w in WORKLOADS if w != "stream_reads_batched")
#: The workloads Redis Streams runs: it has no log across streams, so no ``all_reads``.
REDIS_WORKLOADS = tuple(w for w in WORKLOADS if w != "all_reads")
#: Peer name -> the function that measures it; ``bench/events.py`` may loop over this.
PEERS: dict = {}  # filled in below, once the functions exist

# workload sizes (module docstring); fixed so every run and every peer does the same work
_SINGLE_APPENDS = 2_000
_SINGLE_STREAMS = 200
_BATCHES = 200
_BATCH_EVENTS = 100
_READ_STREAMS = 200
_READ_STREAM_EVENTS = 100
_LOG_EVENTS = _READ_STREAMS * _READ_STREAM_EVENTS  # the log the all_reads and delivery runs read
_PAGE_EVENTS = 1_000
# runs per workload; each timed part lasts 0.1-5 s, so on 2 shared cores one run can be off by 3x
_REPEATS = 5

_TOPIC = "events_peers:Appended"  # a pyeventsourcing topic names a module and a class
_REDIS_TYPE = b"Appended"
_TRACKED_APP = "events_peers"  # the application name a follower's tracking rows carry
_GROUP = "g"
_CONSUMER = "c1"
_STREAM_NAMESPACE = uuid.UUID("6f1d9a52-93c4-4a57-8f0e-2d4b1c7e5a10")  # arbitrary, fixed

_PYES_REQUIREMENT = "eventsourcing>=9.4,<10"
_REDIS_BINARY = "redis-server"
_PG_USER = "bench"
_PG_OS_ACCOUNT = "postgres"  # the unprivileged account that runs PostgreSQL when we are root
_START_TIMEOUT_S = 60.0
_CALL_TIMEOUT_S = 30.0
_STOP_GRACE_S = 10.0
_POLL_S = 0.05


class PeerUnavailable(RuntimeError):
    """A peer cannot run on this machine; ``reason`` says why and what would fix it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Skip path


def _binary(name: str) -> str | None:
    """The path of executable ``name`` on ``PATH`` or in /usr/sbin, /usr/bin; None if absent."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def _pg_binary(name: str) -> str | None:
    """A PostgreSQL server program: on ``PATH``, else from the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    root = "/usr/lib/postgresql"
    versions = sorted((v for v in os.listdir(root) if v.isdigit()), key=int, reverse=True) \
        if os.path.isdir(root) else []
    for version in versions:
        path = os.path.join(root, version, "bin", name)
        if os.access(path, os.X_OK):
            return path
    return None


def pyes_missing() -> str | None:
    """Why pyeventsourcing cannot run here, or None if it can (the bench prints this and skips)."""
    try:
        version = importlib.metadata.version("eventsourcing")
    except importlib.metadata.PackageNotFoundError:
        return (f"the Python package eventsourcing is not installed: pip install "
                f"'{_PYES_REQUIREMENT}' (or pip install -e '.[bench]')")
    major_minor = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if not (9, 4) <= major_minor < (10, 0):
        return f"eventsourcing {version} is installed; this bench speaks {_PYES_REQUIREMENT}"
    return None


def _pg_account_missing() -> str | None:
    """As root, why the ``postgres`` account cannot run the cluster for us; else None."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(_PG_OS_ACCOUNT)
    except KeyError:
        return (f"running as root, and PostgreSQL refuses root, but there is no "
                f"'{_PG_OS_ACCOUNT}' account to run it as (apt-get install postgresql creates "
                "one; or run the bench as an ordinary user)")
    if _binary("runuser") is None:
        return "running as root, and runuser (util-linux) is missing to start PostgreSQL as postgres"
    return None


def postgres_missing() -> str | None:
    """Why pyeventsourcing on PostgreSQL cannot run here, or None if it can."""
    if (reason := pyes_missing()) is not None:
        return reason
    if importlib.util.find_spec("psycopg") is None:
        return ("the Python module psycopg is not installed: pip install 'psycopg[binary,pool]' "
                "(or pip install -e '.[bench]')")
    for program in ("initdb", "pg_ctl"):
        if _pg_binary(program) is None:
            return f"PostgreSQL's {program} is not installed: apt-get install postgresql"
    return _pg_account_missing()


# ---------------------------------------------------------------------------------------------
# Workload data and figures


def _payloads(count: int, seed: int) -> list:
    """``count`` payloads of ``PAYLOAD_BYTES`` seeded random bytes, one per event."""
    rng = random.Random(seed)
    return [rng.randbytes(PAYLOAD_BYTES) for _ in range(count)]


def _stream_name(prefix: str, n: int) -> str:
    """The name of stream ``n`` of a workload (``s-<n>`` for appends, ``b-<n>`` for batches)."""
    return f"{prefix}-{n}"


def _pyes_id(name: str) -> uuid.UUID:
    """The originator id of stream ``name``: a name-based UUID, as an application derives one."""
    return uuid.uuid5(_STREAM_NAMESPACE, name)


class _Timed:
    """Times a block: ``seconds`` of wall clock and ``cpu_s`` of this process's CPU."""

    def __enter__(self):
        self.cpu_s = self.seconds = 0.0
        self._cpu0, self._t0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc_info) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.cpu_s = time.process_time() - self._cpu0


def _figures(workload: str, events: int, timed: _Timed, **params) -> dict:
    """One workload's result: events/s over the timed part, plus what was done."""
    return {"workload": workload, "events": events, "seconds": timed.seconds,
            "events_per_s": events / timed.seconds, "client_cpu_s": timed.cpu_s,
            "payload_bytes": PAYLOAD_BYTES, **params}


def _check(condition: bool, message: str) -> None:
    """Raise if a peer did not store or deliver what the workload wrote (figures would lie)."""
    if not condition:
        raise RuntimeError(message)


def _median_run(runs: list) -> dict:
    """The run with the median events/s (the lower middle one for an even count), plus all rates.

    The median, not the best, so one run slowed by another process on this 2-core machine
    neither drags the figure down nor is hidden: every rate is kept in ``events_per_s_runs``.
    """
    ordered = sorted(runs, key=lambda r: r["events_per_s"])
    median = dict(ordered[(len(ordered) - 1) // 2])
    median["repeats"] = len(runs)
    median["events_per_s_runs"] = [r["events_per_s"] for r in runs]
    return median


def _workloads_arg(workloads, allowed: tuple) -> tuple:
    """Validate a sequence of workload names against ``allowed``; keeps the canonical order."""
    names = (workloads,) if isinstance(workloads, str) else tuple(workloads)
    unknown = [w for w in names if w not in allowed]
    if unknown:
        raise InvalidArgumentError(f"unknown workloads {unknown}; this peer runs {list(allowed)}")
    return tuple(w for w in allowed if w in names)


def _sig3(x: float) -> str:
    """``x`` rounded to 3 significant digits, with thousands separators (12345 -> '12,300')."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    exponent = math.floor(math.log10(abs(x)))
    return f"{round(x, 2 - exponent):,.{max(0, 2 - exponent)}f}"


def _filesystem(path: str) -> str:
    """The filesystem type ``path`` lives on (fsync on tmpfs is a no-op, so it matters)."""
    path, best, fstype = os.path.realpath(path), "", "unknown"
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) >= 3 and (path == fields[1] or path.startswith(
                        fields[1].rstrip("/") + "/")) and len(fields[1]) > len(best):
                    best, fstype = fields[1], fields[2]
    except OSError:
        pass
    return fstype


# ---------------------------------------------------------------------------------------------
# pyeventsourcing workloads, each on a fresh recorder


def _stored_events(stream_id, payloads: list, first_version: int = 1) -> list:
    """pyeventsourcing ``StoredEvent``\\ s for one stream, versions counting from ``first_version``."""
    from eventsourcing.persistence import StoredEvent

    return [StoredEvent(originator_id=stream_id, originator_version=first_version + k,
                        topic=_TOPIC, state=p) for k, p in enumerate(payloads)]


def _pyes_fill(recorder, prefix: str, streams: int, per_stream: int, seed: int) -> list:
    """Untimed: write ``streams`` streams of ``per_stream`` events; returns their ids."""
    payloads = _payloads(streams * per_stream, seed)
    ids = [_pyes_id(_stream_name(prefix, n)) for n in range(streams)]
    for n, stream_id in enumerate(ids):
        recorder.insert_events(_stored_events(stream_id, payloads[n * per_stream:(n + 1) * per_stream]))
    return ids


def _pyes_single_appends(store, seed: int) -> dict:
    """2,000 ``insert_events`` of one event, append i to stream i % 200 at version i // 200 + 1."""
    from eventsourcing.persistence import StoredEvent

    recorder = store.recorder
    payloads = _payloads(_SINGLE_APPENDS, seed)
    ids = [_pyes_id(_stream_name("s", n)) for n in range(_SINGLE_STREAMS)]
    # built before the timer: the timed part is the store's, not this file's object building
    appends = [[StoredEvent(originator_id=ids[i % _SINGLE_STREAMS],
                            originator_version=i // _SINGLE_STREAMS + 1, topic=_TOPIC,
                            state=payloads[i])] for i in range(_SINGLE_APPENDS)]
    store.settle()
    with _Timed() as timed:
        for events in appends:
            recorder.insert_events(events)
    per_stream = _SINGLE_APPENDS // _SINGLE_STREAMS
    for stream_id in ids:
        got = recorder.select_events(stream_id)
        _check([e.originator_version for e in got] == list(range(1, per_stream + 1)),
               f"pyeventsourcing: stream {stream_id} holds versions "
               f"{[e.originator_version for e in got]}")
    return _figures("single_appends", _SINGLE_APPENDS, timed, appends=_SINGLE_APPENDS,
                    events_per_append=1, streams=_SINGLE_STREAMS)


def _pyes_batched_appends(store, seed: int) -> dict:
    """200 ``insert_events`` of 100 events, each batch the whole of a new stream."""
    recorder = store.recorder
    payloads = _payloads(_BATCHES * _BATCH_EVENTS, seed)
    ids = [_pyes_id(_stream_name("b", n)) for n in range(_BATCHES)]
    batches = [_stored_events(ids[n], payloads[n * _BATCH_EVENTS:(n + 1) * _BATCH_EVENTS])
               for n in range(_BATCHES)]
    store.settle()
    with _Timed() as timed:
        for batch in batches:
            recorder.insert_events(batch)
    for stream_id in ids:
        _check(len(recorder.select_events(stream_id)) == _BATCH_EVENTS,
               f"pyeventsourcing: stream {stream_id} lost events")
    return _figures("batched_appends", _BATCHES * _BATCH_EVENTS, timed, appends=_BATCHES,
                    events_per_append=_BATCH_EVENTS, streams=_BATCHES)


def _pyes_stream_reads(store, seed: int) -> dict:
    """Write 200 streams of 100 events, then time ``select_events`` of each, in turn."""
    recorder = store.recorder
    ids = _pyes_fill(recorder, "r", _READ_STREAMS, _READ_STREAM_EVENTS, seed)
    store.settle()
    counts = []
    with _Timed() as timed:
        for stream_id in ids:
            counts.append(len(recorder.select_events(stream_id)))
    _check(counts == [_READ_STREAM_EVENTS] * _READ_STREAMS,
           f"pyeventsourcing: stream reads returned {sorted(set(counts))} events, "
           f"not {_READ_STREAM_EVENTS}")
    return _figures("stream_reads", sum(counts), timed, reads=_READ_STREAMS,
                    streams=_READ_STREAMS, events_per_stream=_READ_STREAM_EVENTS)


def _pyes_all_reads(store, seed: int) -> dict:
    """Write 20,000 events, then time reading every notification from 1 in pages of 1,000."""
    recorder = store.recorder
    _pyes_fill(recorder, "r", _READ_STREAMS, _READ_STREAM_EVENTS, seed)
    store.settle()
    read = pages = 0
    last_id = 0
    with _Timed() as timed:
        start = 1
        while True:
            page = recorder.select_notifications(start, _PAGE_EVENTS)
            pages += 1
            if not page:
                break
            read += len(page)
            last_id = page[-1].id
            start = last_id + 1
    _check(read == _LOG_EVENTS and last_id == recorder.max_notification_id(),
           f"pyeventsourcing: read {read} notifications up to {last_id}, wrote {_LOG_EVENTS}")
    return _figures("all_reads", read, timed, page_events=_PAGE_EVENTS, pages=pages)


def _pyes_subscription_delivery(store, seed: int, track_every_event: bool = False) -> dict:
    """Write 20,000 events, then time a follower's pull from its tracked position to the end."""
    from eventsourcing.persistence import Tracking

    recorder = store.recorder
    _pyes_fill(recorder, "r", _READ_STREAMS, _READ_STREAM_EVENTS, seed)
    tracking = store.factory.tracking_recorder()  # creates the tracking table (untimed)
    store.settle()
    delivered = pages = 0
    with _Timed() as timed:
        # as Follower.pull_and_process: resume from the last tracked notification id
        position = tracking.max_tracking_id(_TRACKED_APP)
        while True:
            page = recorder.select_notifications(position, _PAGE_EVENTS, inclusive_of_start=False)
            pages += 1
            if not page:
                break
            delivered += len(page)
            if track_every_event:
                for notification in page:
                    tracking.insert_tracking(Tracking(_TRACKED_APP, notification.id))
            else:
                tracking.insert_tracking(Tracking(_TRACKED_APP, page[-1].id))
            position = page[-1].id
    _check(delivered == _LOG_EVENTS and tracking.max_tracking_id(_TRACKED_APP) == position,
           f"pyeventsourcing: delivered {delivered} of {_LOG_EVENTS}, tracked "
           f"{tracking.max_tracking_id(_TRACKED_APP)} of {position}")
    return _figures("subscription_delivery", delivered, timed, page_events=_PAGE_EVENTS,
                    pages=pages, tracking="every event" if track_every_event else "every page")


_PYES_RUNNERS = {
    "single_appends": _pyes_single_appends,
    "batched_appends": _pyes_batched_appends,
    "stream_reads": _pyes_stream_reads,
    "all_reads": _pyes_all_reads,
    "subscription_delivery": _pyes_subscription_delivery,
}


class _PyesStore:
    """One fresh pyeventsourcing store: its factory, application recorder and a settle hook."""

    def __init__(self, env: dict, settle=None):
        from eventsourcing.persistence import InfrastructureFactory

        self.factory = InfrastructureFactory.construct(env)
        self.recorder = self.factory.application_recorder()  # creates the events table
        self._settle = settle

    def settle(self) -> None:
        """Untimed, just before a timed part: let the backend flush what setup wrote."""
        if self._settle is not None:
            self._settle()

    def close(self) -> None:
        """Close the factory's connections."""
        self.factory.close()


def _run_pyes(open_store, workloads: tuple, seed: int, repeats: int,
              track_every_event: bool) -> dict:
    """Run each workload ``repeats`` times, each run on a store ``open_store(tag)`` makes fresh."""
    results = {}
    for name in workloads:
        runs = []
        for rep in range(repeats):
            store = open_store(f"{name}_{rep}")
            try:
                if name == "subscription_delivery":
                    runs.append(_pyes_subscription_delivery(store, seed, track_every_event))
                else:
                    runs.append(_PYES_RUNNERS[name](store, seed))
            finally:
                store.close()
        results[name] = _median_run(runs)
    return results


def _pyes_version() -> str:
    """The installed eventsourcing's version."""
    return importlib.metadata.version("eventsourcing")


def bench_pyes_sqlite(*, workloads=PYES_WORKLOADS, seed: int = 0, repeats: int = _REPEATS,
                      workdir: str | None = None, track_every_event: bool = False) -> dict:
    """Measure pyeventsourcing on SQLite files in a temporary directory under ``workdir``.

    Each of the ``repeats`` runs of a workload gets its own new database file. Returns
    ``peer``, ``system``, ``versions``, ``durability``, ``config``, ``seed`` and ``workloads``:
    workload name -> the median run's figures (``events``, ``seconds``, ``events_per_s``,
    ``client_cpu_s``, ``payload_bytes``, the workload's parameters) plus ``repeats`` and
    ``events_per_s_runs`` (every run's rate, in run order). ``track_every_event`` makes
    ``subscription_delivery`` record a ``Tracking`` per event instead of per page. Raises
    :class:`PeerUnavailable` if eventsourcing is not installed.
    """
    workloads = _workloads_arg(workloads, PYES_WORKLOADS)
    integer("seed", seed)
    at_least("repeats", integer("repeats", repeats), 1)
    if (reason := pyes_missing()) is not None:
        raise PeerUnavailable(reason)
    root = tempfile.mkdtemp(prefix="pyes-sqlite-", dir=workdir)
    try:
        def open_store(name: str) -> _PyesStore:
            return _PyesStore({"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                               "SQLITE_DBNAME": os.path.join(root, f"{name}.sqlite")})

        results = _run_pyes(open_store, workloads, seed, repeats, track_every_event)
        # eventsourcing sets only journal_mode=WAL, so a plain connection shows its synchronous
        probe = sqlite3.connect(os.path.join(root, "probe.sqlite"))
        try:
            synchronous = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(
                probe.execute("PRAGMA synchronous").fetchone()[0], "?")
        finally:
            probe.close()
        fs = _filesystem(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "peer": "pyes-sqlite",
        "system": f"eventsourcing {_pyes_version()} on SQLite {sqlite3.sqlite_version}",
        "versions": {"eventsourcing": _pyes_version(), "sqlite": sqlite3.sqlite_version},
        "durability": f"WAL journal, synchronous={synchronous}: each commit fsyncs the WAL",
        "config": {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "journal_mode": "WAL",
                   "synchronous": synchronous, "filesystem": fs, "originator_id": "uuid5"},
        "seed": seed,
        "workloads": results,
    }


# ---------------------------------------------------------------------------------------------
# Server processes: PostgreSQL (pg_ctl) and Redis (a child process)

# servers not yet stopped; the atexit hook stops whatever a caller forgot
_LIVE: set = set()
_LIVE_LOCK = threading.Lock()


def _stop_live() -> None:
    """``atexit`` hook: stop every server still running."""
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        server.stop()


atexit.register(_stop_live)


def _log_tail(path: str, max_chars: int = 2000) -> str:
    """The end of a log file, for error messages ('' if it is not there)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")[-max_chars:]
    except OSError:
        return ""


class _PostgresCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1, created by ``initdb``, run by ``pg_ctl``.

    Use as a context manager. ``database(name)`` creates a database and returns the
    pyeventsourcing env for it; ``checkpoint()`` flushes everything written so far.
    """

    def __init__(self, workdir: str | None = None):
        self._workdir = workdir
        self.root: str | None = None
        self.port: int | None = None
        self.password = secrets.token_hex(16)
        self.settings: dict = {}
        self.version: str | None = None
        self._admin = None
        self._running = False

    def _as_server_account(self, argv: list) -> list:
        """Prefix ``argv`` so it runs as the unprivileged account when we are root."""
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root; Debian's packages create this account for it
            return [_binary("runuser"), "-u", _PG_OS_ACCOUNT, "--", *argv]
        return argv

    def _run(self, argv: list, what: str) -> None:
        """Run a PostgreSQL program to completion; raise :class:`PeerUnavailable` if it fails."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        done = subprocess.run(self._as_server_account(argv), cwd=self.root, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=_START_TIMEOUT_S, check=False)
        if done.returncode != 0:
            raise PeerUnavailable(
                f"PostgreSQL could not start: {what} exited with {done.returncode}:\n"
                f"{(done.stderr.strip() or done.stdout)[-2000:]}"
                f"{_log_tail(os.path.join(self.root, 'server.log'))}")

    def start(self) -> None:
        """initdb, configure, ``pg_ctl start -w``, and open an admin connection."""
        import psycopg

        if (reason := postgres_missing()) is not None:
            raise PeerUnavailable(reason)
        self.root = tempfile.mkdtemp(prefix="pyes-postgres-", dir=self._workdir)
        with _LIVE_LOCK:
            _LIVE.add(self)
        pwfile = os.path.join(self.root, "pwfile")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        if os.geteuid() == 0:
            import pwd

            account = pwd.getpwnam(_PG_OS_ACCOUNT)
            for path in (self.root, pwfile):
                os.chown(path, account.pw_uid, account.pw_gid)
        data = os.path.join(self.root, "data")
        self._run([_pg_binary("initdb"), "-D", data, "-U", _PG_USER, f"--pwfile={pwfile}",
                   "--auth=scram-sha-256", "-E", "UTF8", "--no-locale"], "initdb")
        os.remove(pwfile)
        self.port = free_ports(1)[0]
        # in the config file rather than pg_ctl -o, which a shell would split at spaces in paths
        with open(os.path.join(data, "postgresql.conf"), "a") as conf:
            conf.write(f"\n# events_peers.py: loopback only, on a free port\n"
                       f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.root}'\n")
        self._running = True  # from here on stop() must run pg_ctl stop
        self._run([_pg_binary("pg_ctl"), "start", "-w", "-t", str(int(_START_TIMEOUT_S)),
                   "-D", data, "-l", os.path.join(self.root, "server.log")], "pg_ctl start")
        self._admin = psycopg.connect(host="127.0.0.1", port=self.port, user=_PG_USER,
                                      password=self.password, dbname="postgres", autocommit=True,
                                      connect_timeout=int(_CALL_TIMEOUT_S))
        for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method",
                     "shared_buffers"):
            self.settings[name] = self._admin.execute(f"SHOW {name}").fetchone()[0]
        self.version = self.settings["server_version"]

    def database(self, name: str) -> dict:
        """Create database ``name``; returns the pyeventsourcing env that connects to it."""
        self._admin.execute(f'CREATE DATABASE "{name}"')
        return {"PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_DBNAME": name,
                "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(self.port),
                "POSTGRES_USER": _PG_USER, "POSTGRES_PASSWORD": self.password}

    def checkpoint(self) -> None:
        """Flush every dirty page now, so no checkpoint runs during a timed part."""
        self._admin.execute("CHECKPOINT")

    def stop(self) -> None:
        """``pg_ctl stop -m fast`` (SIGKILL if it will not), then remove the directory."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        data = os.path.join(self.root, "data") if self.root else None
        if self._running and data:
            self._running = False
            try:
                self._run([_pg_binary("pg_ctl"), "stop", "-w", "-m", "fast", "-t",
                           str(int(_STOP_GRACE_S)), "-D", data], "pg_ctl stop")
            except (PeerUnavailable, subprocess.TimeoutExpired):
                self._kill_postmaster(data)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        with _LIVE_LOCK:
            _LIVE.discard(self)

    @staticmethod
    def _kill_postmaster(data: str) -> None:
        """Last resort: SIGKILL the postmaster named in its pid file."""
        try:
            with open(os.path.join(data, "postmaster.pid")) as f:
                os.kill(int(f.readline()), signal.SIGKILL)
        except (OSError, ValueError):
            pass

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def bench_pyes_postgres(*, workloads=PYES_WORKLOADS, seed: int = 0, repeats: int = _REPEATS,
                        workdir: str | None = None, track_every_event: bool = False) -> dict:
    """Measure pyeventsourcing on a throwaway PostgreSQL cluster started under ``workdir``.

    Each run of a workload gets its own new database. Returns the same shape as
    :func:`bench_pyes_sqlite`. Raises :class:`PeerUnavailable` if eventsourcing, psycopg or
    PostgreSQL is missing or the cluster cannot start.
    """
    workloads = _workloads_arg(workloads, PYES_WORKLOADS)
    integer("seed", seed)
    at_least("repeats", integer("repeats", repeats), 1)
    with _PostgresCluster(workdir) as cluster:
        def open_store(name: str) -> _PyesStore:
            return _PyesStore(cluster.database(name), settle=cluster.checkpoint)

        results = _run_pyes(open_store, workloads, seed, repeats, track_every_event)
        settings, fs = dict(cluster.settings), _filesystem(cluster.root)
    import psycopg

    return {
        "peer": "pyes-postgres",
        "system": f"eventsourcing {_pyes_version()} on PostgreSQL {settings['server_version']}",
        "versions": {"eventsourcing": _pyes_version(), "postgres": settings["server_version"],
                     "psycopg": psycopg.__version__},
        "durability": (f"fsync={settings['fsync']}, synchronous_commit="
                       f"{settings['synchronous_commit']}: each commit waits for the WAL "
                       f"{settings['wal_sync_method']}"),
        "config": {"PERSISTENCE_MODULE": "eventsourcing.postgres", **settings,
                   "filesystem": fs, "originator_id": "uuid5",
                   "server_account": _PG_OS_ACCOUNT if os.geteuid() == 0 else "current user"},
        "seed": seed,
        "workloads": results,
    }


class _RedisServer:
    """One ``redis-server`` on loopback with its built-in default config, in its own process group."""

    def __init__(self, workdir: str | None = None):
        self._workdir = workdir
        self.root: str | None = None
        self.proc = None
        self.client = None
        self.version: str | None = None
        self.persistence: dict = {}
        self._log = None

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        import redis

        if (reason := redis_missing()) is not None:
            raise PeerUnavailable(reason)
        self.root = tempfile.mkdtemp(prefix="redis-streams-", dir=self._workdir)
        with _LIVE_LOCK:
            _LIVE.add(self)
        port = free_ports(1)[0]
        # no config file: persistence stays at Redis's defaults; --dir keeps dump.rdb in root
        argv = [_binary(_REDIS_BINARY), "--port", str(port), "--bind", "127.0.0.1",
                "--dir", self.root, "--daemonize", "no"]
        guard = shutil.which("setpriv")
        if guard and sys.platform == "linux":
            # the kernel kills the server if our starting thread dies, even by SIGKILL
            argv = [guard, "--pdeathsig", "KILL", "--", *argv]
        log_path = os.path.join(self.root, "redis.log")
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=_CALL_TIMEOUT_S,
                                  socket_connect_timeout=_CALL_TIMEOUT_S)
        deadline, last = time.monotonic() + _START_TIMEOUT_S, "no answer yet"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n"
                                   f"{_log_tail(log_path)}")
            try:
                self.client.ping()
                break
            except redis.ConnectionError as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server not answering after {_START_TIMEOUT_S:.0f} s "
                                   f"({last})")
            time.sleep(_POLL_S)
        self.version = self.client.info("server")["redis_version"]
        for name in ("save", "appendonly", "appendfsync"):
            self.persistence[name] = self.client.config_get(name)[name]

    def rdb_saves(self) -> int:
        """RDB snapshots taken since the server started (``INFO persistence``, Redis >= 7)."""
        return int(self.client.info("persistence").get("rdb_saves", -1))

    def fresh(self) -> None:
        """Untimed: empty the data set and wait until no snapshot is being written."""
        self.client.flushall()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while self.client.info("persistence").get("rdb_bgsave_in_progress", 0):
            if time.monotonic() > deadline:
                raise RuntimeError("redis: a background save did not finish")
            time.sleep(_POLL_S)

    def stop(self) -> None:
        """Close the client, SIGTERM the process group (SIGKILL after a grace), remove the dir."""
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.proc is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if self.proc.poll() is not None:
                    break
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(_STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    pass
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# Redis Streams workloads


def _redis_fill(r, prefix: str, streams: int, per_stream: int, seed: int) -> list:
    """Untimed: write ``streams`` streams of ``per_stream`` entries; returns their keys."""
    payloads = _payloads(streams * per_stream, seed)
    keys = [_stream_name(prefix, n) for n in range(streams)]
    pipe = r.pipeline(transaction=False)
    for n, key in enumerate(keys):
        for k in range(per_stream):
            pipe.xadd(key, {"type": _REDIS_TYPE, "data": payloads[n * per_stream + k]},
                      id=f"0-{k + 1}")
        pipe.execute()
    return keys


def _redis_single_appends(server: _RedisServer, seed: int) -> dict:
    """2,000 XADDs, one round trip each, append i to ``s-<i % 200>`` as id ``0-<version>``."""
    r = server.client
    payloads = _payloads(_SINGLE_APPENDS, seed)
    appends = [(_stream_name("s", i % _SINGLE_STREAMS), {"type": _REDIS_TYPE, "data": payloads[i]},
                f"0-{i // _SINGLE_STREAMS + 1}") for i in range(_SINGLE_APPENDS)]
    saves = server.rdb_saves()
    with _Timed() as timed:
        for key, fields, entry_id in appends:
            r.xadd(key, fields, id=entry_id)
    saves = server.rdb_saves() - saves
    per_stream = _SINGLE_APPENDS // _SINGLE_STREAMS
    for n in range(_SINGLE_STREAMS):
        _check(r.xlen(_stream_name("s", n)) == per_stream, f"redis: stream s-{n} lost entries")
    return _figures("single_appends", _SINGLE_APPENDS, timed, appends=_SINGLE_APPENDS,
                    events_per_append=1, streams=_SINGLE_STREAMS, rdb_saves_during=saves)


def _redis_batched_appends(server: _RedisServer, seed: int) -> dict:
    """200 pipelines (``transaction=False``) of 100 XADDs, each to its own new stream."""
    r = server.client
    payloads = _payloads(_BATCHES * _BATCH_EVENTS, seed)
    batches = [(_stream_name("b", n), [{"type": _REDIS_TYPE, "data": p} for p in
                                       payloads[n * _BATCH_EVENTS:(n + 1) * _BATCH_EVENTS]])
               for n in range(_BATCHES)]
    pipe = r.pipeline(transaction=False)
    saves = server.rdb_saves()
    with _Timed() as timed:
        for key, entries in batches:
            for k, fields in enumerate(entries):
                pipe.xadd(key, fields, id=f"0-{k + 1}")
            pipe.execute()
    saves = server.rdb_saves() - saves
    for key, _ in batches:
        _check(r.xlen(key) == _BATCH_EVENTS, f"redis: stream {key} lost entries")
    return _figures("batched_appends", _BATCHES * _BATCH_EVENTS, timed, appends=_BATCHES,
                    events_per_append=_BATCH_EVENTS, streams=_BATCHES, rdb_saves_during=saves)


def _redis_stream_reads(server: _RedisServer, seed: int, pipelined: bool = False) -> dict:
    """Write 200 streams of 100 entries, then time ``XRANGE key - +`` of each, in turn; or, with
    ``pipelined`` (``stream_reads_batched``), all of them in one pipeline (``transaction=False``):
    one round trip."""
    r = server.client
    workload = "stream_reads_batched" if pipelined else "stream_reads"
    keys = _redis_fill(r, "rb" if pipelined else "r", _READ_STREAMS, _READ_STREAM_EVENTS, seed)
    saves = server.rdb_saves()
    with _Timed() as timed:
        if pipelined:
            pipe = r.pipeline(transaction=False)
            for key in keys:
                pipe.xrange(key, "-", "+")
            counts = [len(entries) for entries in pipe.execute()]
        else:
            counts = [len(r.xrange(key, "-", "+")) for key in keys]
    saves = server.rdb_saves() - saves
    _check(counts == [_READ_STREAM_EVENTS] * _READ_STREAMS,
           f"redis: {workload} returned {sorted(set(counts))} entries, not {_READ_STREAM_EVENTS}")
    return _figures(workload, sum(counts), timed, reads=_READ_STREAMS,
                    streams=_READ_STREAMS, events_per_stream=_READ_STREAM_EVENTS,
                    rdb_saves_during=saves)


def _redis_subscription_delivery(server: _RedisServer, seed: int) -> dict:
    """One stream of 20,000 entries; time a group consumer's XREADGROUP pages and their XACKs."""
    r = server.client
    (key,) = _redis_fill(r, "sub", 1, _LOG_EVENTS, seed)
    r.xgroup_create(key, _GROUP, id="0")
    saves = server.rdb_saves()
    delivered = pages = 0
    with _Timed() as timed:
        while True:
            reply = r.xreadgroup(_GROUP, _CONSUMER, {key: ">"}, count=_PAGE_EVENTS)
            pages += 1
            entries = reply[0][1] if reply else []
            if not entries:
                break
            delivered += len(entries)
            r.xack(key, _GROUP, *(entry_id for entry_id, _ in entries))
    saves = server.rdb_saves() - saves
    pending = r.xpending(key, _GROUP)["pending"]
    _check(delivered == _LOG_EVENTS and pending == 0,
           f"redis: delivered {delivered} of {_LOG_EVENTS}, {pending} still pending")
    return _figures("subscription_delivery", delivered, timed, page_events=_PAGE_EVENTS,
                    pages=pages, tracking="XACK every page", rdb_saves_during=saves)


_REDIS_RUNNERS = {
    "single_appends": _redis_single_appends,
    "batched_appends": _redis_batched_appends,
    "stream_reads": _redis_stream_reads,
    "stream_reads_batched": lambda server, seed: _redis_stream_reads(server, seed, pipelined=True),
    "subscription_delivery": _redis_subscription_delivery,
}


def _hiredis_available() -> bool:
    """True if redis-py will parse replies with hiredis (a C extension) rather than in Python."""
    return importlib.util.find_spec("hiredis") is not None


def bench_redis_streams(*, workloads=REDIS_WORKLOADS, seed: int = 0, repeats: int = _REPEATS,
                        workdir: str | None = None) -> dict:
    """Measure Redis Streams on a ``redis-server`` started under ``workdir`` with its defaults.

    Each run of a workload starts from ``FLUSHALL``. Returns the same shape as
    :func:`bench_pyes_sqlite`, with the server's persistence settings in ``config`` and
    ``rdb_saves_during`` (snapshots taken during the timed part) per workload.
    Raises :class:`PeerUnavailable` if ``redis-server`` or redis-py is missing.
    """
    workloads = _workloads_arg(workloads, REDIS_WORKLOADS)
    integer("seed", seed)
    at_least("repeats", integer("repeats", repeats), 1)
    import redis

    with _RedisServer(workdir) as server:
        results = {}
        for name in workloads:
            runs = []
            for _ in range(repeats):
                server.fresh()
                runs.append(_REDIS_RUNNERS[name](server, seed))
            results[name] = _median_run(runs)
        version, persistence, fs = server.version, dict(server.persistence), _filesystem(server.root)
    return {
        "peer": "redis-streams",
        "system": f"Redis {version} Streams",
        "versions": {"redis": version, "redis-py": redis.__version__},
        # redis-py parses replies in Python unless hiredis is installed: most of its client CPU
        "parser": "hiredis" if _hiredis_available() else "redis-py's Python parser",
        "durability": (f"save '{persistence['save']}', appendonly {persistence['appendonly']} "
                       "(defaults): an acknowledged XADD is in memory until the next snapshot"),
        "config": {**persistence, "filesystem": fs, "config_file": "none (built-in defaults)"},
        "seed": seed,
        "workloads": results,
    }


PEERS.update({"pyes-sqlite": bench_pyes_sqlite, "pyes-postgres": bench_pyes_postgres,
              "redis-streams": bench_redis_streams})

_PEER_MISSING = {"pyes-sqlite": pyes_missing, "pyes-postgres": postgres_missing,
                 "redis-streams": redis_missing}
_PEER_WORKLOADS = {"pyes-sqlite": PYES_WORKLOADS, "pyes-postgres": PYES_WORKLOADS,
                   "redis-streams": REDIS_WORKLOADS}


def bench_all_peers(*, peers=tuple(PEERS), workloads=WORKLOADS, seed: int = 0, repeats: int = _REPEATS,
                    workdir: str | None = None, track_every_event: bool = False) -> dict:
    """Run every peer in ``peers`` on the ``workloads`` it supports, ``repeats`` runs each.

    Returns peer name -> its result dict (see :func:`bench_pyes_sqlite`), or the reason string
    if the peer is unavailable here. ``track_every_event`` goes to the pyeventsourcing peers.
    Any other failure propagates.
    """
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise InvalidArgumentError(f"unknown peers {unknown}; known: {list(PEERS)}")
    workloads = _workloads_arg(workloads, WORKLOADS)
    out: dict = {}
    for peer in peers:
        if (reason := _PEER_MISSING[peer]()) is not None:
            out[peer] = reason
            continue
        kwargs = {"workloads": tuple(w for w in workloads if w in _PEER_WORKLOADS[peer]),
                  "seed": seed, "repeats": repeats, "workdir": workdir}
        if peer.startswith("pyes-"):
            kwargs["track_every_event"] = track_every_event
        try:
            out[peer] = PEERS[peer](**kwargs)
        except PeerUnavailable as exc:
            out[peer] = exc.reason
    return out


# ---------------------------------------------------------------------------------------------
# Command line


def _print_table(results: dict, workloads: tuple) -> None:
    """One row per workload, one column of events/s per peer; then what each peer was."""
    peers = list(results)
    width = max(len(w) for w in workloads)
    col = max(14, *(len(p) + 2 for p in peers))
    print(f"{'events/s':<{width}}" + "".join(f"{p:>{col}}" for p in peers))
    for w in workloads:
        cells = []
        for p in peers:
            r = results[p]
            if isinstance(r, str):
                cells.append("skipped")
            elif w in r["workloads"]:
                cells.append(_sig3(r["workloads"][w]["events_per_s"]))
            else:
                cells.append("n/a")
        print(f"{w:<{width}}" + "".join(f"{c:>{col}}" for c in cells))
    print()
    for p, r in results.items():
        if isinstance(r, str):
            print(f"{p}: skipped: {r}")
            continue
        parser = f"; client parser {r['parser']}" if "parser" in r else ""
        print(f"{p}: {r['system']}; {r['durability']}; filesystem {r['config']['filesystem']}"
              f"{parser}")
        for w, f in r["workloads"].items():
            extra = (f", snapshots during it {f['rdb_saves_during']}"
                     if "rdb_saves_during" in f else "")
            runs = f["events_per_s_runs"]
            print(f"  {w:<{width}} {_sig3(f['events_per_s']):>10} events/s  (median of {len(runs)}, "
                  f"range {_sig3(min(runs))}-{_sig3(max(runs))}; {f['events']} events in "
                  f"{_sig3(f['seconds'])} s, client CPU {f['client_cpu_s'] / f['seconds']:.0%} "
                  f"of a core{extra})")


def main(argv: list | None = None) -> int:
    """Command line: measure every peer (skipping one that cannot run here) and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", action="append", choices=list(PEERS),
                        help="a peer to run (repeatable; default: all)")
    parser.add_argument("--workload", action="append", choices=list(WORKLOADS),
                        help="a workload to run (repeatable; default: all)")
    parser.add_argument("--repeats", type=int, default=_REPEATS,
                        help="runs of each workload, each on a fresh store; the median is shown")
    parser.add_argument("--track-every-event", action="store_true",
                        help="pyeventsourcing delivery records a Tracking per event, not per page")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="parent of the data dirs (default: /tmp)")
    args = parser.parse_args(argv)
    peers = tuple(args.peer or PEERS)
    workloads = _workloads_arg(args.workload or WORKLOADS, WORKLOADS)
    # the load average says whether other work shared the 2 cores with the figures below
    print(f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} "
          f"cores, load average {os.getloadavg()[0]:.1f}; {PAYLOAD_BYTES}-byte payloads, "
          f"seed {args.seed}, median of {args.repeats} runs", flush=True)
    t0 = time.perf_counter()
    results = bench_all_peers(peers=peers, workloads=workloads, seed=args.seed,
                              repeats=args.repeats, workdir=args.workdir,
                              track_every_event=args.track_every_event)
    _print_table(results, workloads)
    print(f"wall {time.perf_counter() - t0:.1f} s, load average at the end "
          f"{os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
