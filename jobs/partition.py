"""A partitioned store rebalanced under load as a Ray job: `ddia-ray partition` run by a cluster's job supervisor.

Submit it from the repository root to any cluster whose dashboard you can reach
(see clusters/README.md for reaching each kind of cluster)::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/partition.py
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/partition.py --groups 3 --keys 20000 --duration-s 60 --root s3://bucket/parts

Theory of operation: the same as jobs/raft.py. The job's driver runs on the
head node with ``RAY_ADDRESS`` set, so the CLI's ``ensure_ray()`` joins the
cluster, and each replica group starts its replicas at its own Ray node.

Arguments: everything after ``jobs/partition.py`` goes to ``ddia-ray
partition`` unchanged (``--groups``, ``--replicas``, ``--protocol``,
``--engine``, ``--keys``, ``--skew``, ``--clients``, ``--duration-s``,
``--fault``, ``--fault-s``, ``--seed``, ``--root``), and ``--no-progress`` is
added unless it is already there or ``DDIA_RAY_JOB_PROGRESS=1`` is set (the
live load table would fill the log with redrawn frames). On several nodes pass
a ``--root`` every node reaches (``s3://...``): a killed replica restarted
elsewhere finds its log and engine again there.

The log ends with the load per partition before and after the rebalance, the
move's report and ``partitioning: ok`` or ``partitioning: FAILED``; the job's
exit status is the CLI's (0 only for ok), so a lost or stale write, a broken
scan or a non-linearizable history is a FAILED job.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared job helper beside this script
from cli_job import PROGRESS_ENV_VAR, job_args, run_cli  # noqa: E402

__all__ = ["PROGRESS_ENV_VAR", "job_args"]

if __name__ == "__main__":
    raise SystemExit(run_cli("partition"))
