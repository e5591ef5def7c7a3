"""A replicated store under a nemesis as a Ray job: `ddia-ray replicate` run by a cluster's job supervisor.

Submit it from the repository root to any cluster whose dashboard you can reach
(see clusters/README.md for reaching each kind of cluster)::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/replicate.py
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/replicate.py --mode async --schedule partition-leader --duration-s 30 --root s3://bucket/repl

Theory of operation: the same as jobs/raft.py. The job's driver runs on the
head node with ``RAY_ADDRESS`` set, so the CLI's ``ensure_ray()`` joins the
cluster, and the replicas and coordinators are spread over its nodes.

Arguments: everything after ``jobs/replicate.py`` goes to ``ddia-ray
replicate`` unchanged (``--mode``, ``--engine``, ``--read``, ``--replicas``,
``--clients``, ``--duration-s``, ``--schedule``, ``--lease-s``, ``--seed``,
``--root``), and ``--no-progress`` is added unless it is already there or
``DDIA_RAY_JOB_PROGRESS=1`` is set. On several nodes pass a ``--root`` every
node reaches (``s3://...``): a follower copies the leader's checkpoint files
from there, and a restarted replica finds its log and engine again.

The log ends with ``replication: ok`` or ``replication: FAILED`` and the job's
exit status is the CLI's (0 only for ok), so a lost acknowledged write or a
broken session guarantee is a FAILED job.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared job helper beside this script
from cli_job import PROGRESS_ENV_VAR, job_args, run_cli  # noqa: E402

__all__ = ["PROGRESS_ENV_VAR", "job_args"]

if __name__ == "__main__":
    raise SystemExit(run_cli("replicate"))
