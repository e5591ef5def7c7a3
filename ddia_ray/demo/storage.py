"""The storage part of ``ddia-ray demo``: load, read, scan, crash a storage node, recover.

Theory of operation: a :class:`~ddia_ray.storage.node.StorageNode` on the LSM
engine is loaded in batches (``put_many``), read back at random
(``get_many``), scanned, then killed by the nemesis (``ray.kill``) in the
middle of its life, like a crashed process. The node restarted on the same URL must serve
every acknowledged write; the part ends with the engine's levels and its
write, read and space amplification, and reports ``writes lost: <n>``.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
import uuid
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..runtime import ensure_ray

__all__ = ["run_storage_demo"]


def _key(i: int) -> bytes:
    return b"user:%010d" % i


def _value(i: int) -> bytes:
    # Incompressible filler, so the on-disk figures are not flattered by compression.
    return b"profile-%d-" % i + random.Random(i).randbytes(64)


def run_storage_demo(args, console: Console | None = None) -> int:
    """Run the storage part; returns the number of acknowledged writes lost (0 is the goal)."""
    from ..storage.node import StorageNode

    console = console or Console()
    ensure_ray()
    tmp = None if args.storage_root else tempfile.mkdtemp(prefix="ddia-ray-storage-")
    url = args.storage_root or f"file://{tmp}/db"
    name = f"demo-storage-{uuid.uuid4().hex[:6]}"
    keys = args.keys
    options: dict[str, Any] = {"sync": "batch", "memtable_bytes": 256 * 1024}
    console.print(f"[bold]storage[/]: an LSM storage node at {url}, {keys} keys, writes synced per batch")
    node = StorageNode.launch(name, url, engine="lsm", **options)
    client = node.client()
    rng = random.Random(args.seed)
    progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, disable=args.no_progress)
    batch = 1000
    try:
        t0 = time.monotonic()
        with progress:
            task = progress.add_task("load", total=keys)
            for start in range(0, keys, batch):
                stop = min(keys, start + batch)
                client.put_many((_key(i), _value(i)) for i in range(start, stop))
                progress.update(task, advance=stop - start)
        load_s = time.monotonic() - t0
        sample = [rng.randrange(keys) for _ in range(min(keys, 20_000))]
        t0 = time.monotonic()
        got = []
        for i in range(0, len(sample), batch):
            got += client.get_many(_key(k) for k in sample[i:i + batch])
        read_s = time.monotonic() - t0
        wrong = sum(v != _value(k) for k, v in zip(sample, got))
        lo = rng.randrange(max(1, keys - 500))
        scanned = list(client.scan(_key(lo), _key(lo + 500)))
        console.print(f"  loaded {keys} keys in {load_s:.2f}s ({keys / load_s:,.0f}/s, batches of {batch}); "
                      f"{len(sample)} random reads in {read_s:.2f}s ({wrong} wrong); "
                      f"scan of [{lo}, {lo + 500}) returned {len(scanned)} keys")
        before = client.stats()
        node.nemesis.kill(node.node)  # a crash (ray.kill): no close(), no flush; the WAL holds the memtable
        console.print("  [yellow]crash[/]: the nemesis killed the storage node; restarting it on the same URL")
        node.nemesis.restart(node.node)
        lost = 0
        for start in range(0, keys, 5000):
            values = client.get_many(_key(i) for i in range(start, min(keys, start + 5000)))
            lost += sum(v != _value(start + j) for j, v in enumerate(values))
        console.print(f"  recovered: {keys - lost} of {keys} acknowledged writes present after the crash")
        client.compact()
        _report(console, before, client.stats())
    finally:
        client.close()
        node.shutdown()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"writes lost: {lost + wrong}", flush=True)
    return lost + wrong


#: The statistics the demo shows, in order.
_SHOWN = ("level_files", "level_bytes", "disk_bytes", "flushes", "compactions", "slowdowns", "stalls",
          "wal_replayed_entries", "write_amplification", "read_amplification", "space_amplification")


def _report(console: Console, before: dict, after: dict) -> None:
    table = Table(title="LSM engine: before the crash, and after recovery and a full compaction")
    table.add_column("metric")
    table.add_column("before crash", justify="right")
    table.add_column("after compaction", justify="right")

    def fmt(v) -> str:
        if isinstance(v, float):
            return f"{v:,.2f}"
        if isinstance(v, (tuple, list)):
            while len(v) > 1 and not v[-1]:
                v = v[:-1]  # empty deeper levels say nothing
            return " ".join(str(x) for x in v)
        return "-" if v is None else str(v)

    for k in _SHOWN:
        table.add_row(k.replace("_", " "), fmt(before.get(k)), fmt(after.get(k)))
    console.print(table)
