"""Ray job: bulk-load a Parquet dataset into a storage node.

Submit from the repository root::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/ingest.py --source s3://bucket/dataset/ --node-url s3://bucket/db/ --engine lsm

The dataset needs binary (or string) columns ``key`` and ``value``. Without
``--source`` the job writes a sample dataset of ``--rows`` rows first, so it
also runs as a self-contained smoke test; the temporary directories it makes
for the sample and the database are removed at the end unless ``--keep``. The storage node reads the dataset
itself (the rows never pass through the driver) and, for the LSM engine,
loads it with ``ingest`` (sorted SSTables written directly, no WAL). The job
then reads a sample back through the node and fails if any row is missing.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import uuid


def _sample_dataset(rows: int, seed: int) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    keys = [b"row:%012d" % i for i in range(rows)]
    rng.shuffle(keys)
    values = [rng.randbytes(100) for _ in range(rows)]
    path = tempfile.mkdtemp(prefix="ddia-ray-ingest-src-")
    table = pa.table({"key": pa.array(keys, pa.binary()), "value": pa.array(values, pa.binary())})
    half = rows // 2
    pq.write_table(table.slice(0, half), f"{path}/part-0.parquet")
    pq.write_table(table.slice(half), f"{path}/part-1.parquet")
    return f"file://{path}"


def main(argv=None) -> int:
    """Run the ingest job; returns the process exit code."""
    ap = argparse.ArgumentParser(description="Bulk-load a Parquet dataset (key, value) into a storage node.")
    ap.add_argument("--source", help="fsspec URL of the Parquet dataset (default: write a sample one)")
    ap.add_argument("--rows", type=int, default=100_000, help="rows of the sample dataset (default 100000)")
    ap.add_argument("--node-url", help="fsspec URL of the database (default: a temporary directory)")
    ap.add_argument("--engine", default="lsm", choices=["lsm", "btree"])
    ap.add_argument("--name", default=None, help="storage node actor name (default: a fresh one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary sample dataset and database the job made (default: remove them)")
    args = ap.parse_args(argv)

    import pyarrow.dataset as ds
    import fsspec

    from ddia_ray.storage.node import StorageNode

    # Directories this run made for itself; a smoke test run again and again must not fill /tmp.
    made: list[str] = []
    node = None
    try:
        source = args.source
        if source is None:
            source = _sample_dataset(args.rows, args.seed)
            made.append(source.removeprefix("file://"))
        node_url = args.node_url
        if node_url is None:
            made.append(tempfile.mkdtemp(prefix="ddia-ray-ingest-db-"))
            node_url = f"file://{made[-1]}/db"
        node = StorageNode.launch(args.name or f"ingest-{uuid.uuid4().hex[:6]}", node_url, engine=args.engine)
        client = node.client()
        try:
            loaded = client.ingest_parquet(source)
            fs, path = fsspec.core.url_to_fs(source)
            table = ds.dataset(path, filesystem=fs, format="parquet").to_table(columns=["key", "value"])
            rng = random.Random(args.seed)
            picks = [rng.randrange(table.num_rows) for _ in range(min(1000, table.num_rows))]
            keys = [table.column("key")[i].as_py() for i in picks]
            expected = [table.column("value")[i].as_py() for i in picks]
            got = client.get_many(keys)
        finally:
            client.close()
        missing = sum(g != e for g, e in zip(got, expected))
        print(f"ingested {loaded} rows from {source} into {node_url} ({args.engine}); "
              f"sample of {len(picks)} read back, {missing} missing")
        print(f"rows missing: {missing}", flush=True)
        return 0 if missing == 0 and loaded == table.num_rows else 1
    finally:
        # A failed load leaves no actor behind and, unless --keep, none of the directories it made.
        if node is not None:
            node.shutdown()
        if not args.keep:
            for made_dir in made:
                shutil.rmtree(made_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
