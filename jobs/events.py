"""The event store under a fault schedule as a Ray job: `ddia-ray events` run by a cluster's job supervisor.

Submit it from the repository root to any cluster whose dashboard you can reach
(see clusters/README.md for reaching each kind of cluster)::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/events.py
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/events.py --clients 8 --duration-s 60 --schedule kill-leader --root s3://bucket/events

Theory of operation: the same as jobs/raft.py. The job's driver runs on the
head node with ``RAY_ADDRESS`` set, so the CLI's ``ensure_ray()`` joins the
cluster, and the event store's Raft members are spread over its nodes; the
command threads, the projection and the consumers run in the driver.

Arguments: everything after ``jobs/events.py`` goes to ``ddia-ray events``
unchanged (``--replicas``, ``--engine``, ``--clients``, ``--orders``,
``--duration-s``, ``--schedule``, ``--no-faults``, ``--seed``, ``--root``), and
``--no-progress`` is added unless it is already there or
``DDIA_RAY_JOB_PROGRESS=1`` is set. On several nodes pass a ``--root`` every
node reaches (``s3://...``): a restarted member finds its log and engine there.

The log ends with the checkers' lines (``events lost: 0``, ``$all gap-free: yes``,
``projection: ok``, ``consumer group billing: ok``) and ``events: ok`` or
``events: FAILED``; the job's exit status is the CLI's (0 only for ok), so a
lost acknowledged event is a FAILED job.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared job helper beside this script
from cli_job import PROGRESS_ENV_VAR, job_args, run_cli  # noqa: E402

__all__ = ["PROGRESS_ENV_VAR", "job_args"]

if __name__ == "__main__":
    raise SystemExit(run_cli("events"))
