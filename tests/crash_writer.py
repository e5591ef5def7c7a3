"""A writer process for the crash tests: writes numbered keys and reports each acknowledged one.

Usage: ``python crash_writer.py ENGINE URL SYNC [OPTIONS_JSON]``. Each acknowledged write is
followed by a line ``ack <n>`` on stdout (flushed), so the parent knows exactly which writes
were acknowledged when it sends SIGKILL. Batches of 2..4 keys exercise atomic batches; a single key
is written with ``put``, the per-key path.
"""

from __future__ import annotations

import json
import random
import sys

from ddia_ray.storage import WriteBatch, open_engine


def key(n: int) -> bytes:
    """The key of write number ``n``."""
    return b"k%08d" % n


def value(n: int) -> bytes:
    """The value of write number ``n`` (long enough to fill memtables quickly)."""
    return (b"v%08d-" % n) * 8


def main() -> None:
    engine, url = sys.argv[1], sys.argv[2]  # argv[3], the mode, only names the run: OPTIONS hold the sync setting
    options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    db = open_engine(url, engine, **options)
    rng = random.Random(int(options.get("seed", 0)) if "seed" in options else 0)
    n = 0
    out = sys.stdout
    while True:
        size = rng.randint(1, 4)
        if size == 1:
            db.put(key(n), value(n))
        else:
            batch = WriteBatch()
            for i in range(n, n + size):
                batch.put(key(i), value(i))
            db.write(batch)
        n += size
        out.write(f"ack {n}\n")
        out.flush()


if __name__ == "__main__":
    main()
