"""RaftKV under a nemesis as a Ray job: `ddia-ray raft` run by a cluster's job supervisor.

Submit it from the repository root to any cluster whose dashboard you can reach
(see clusters/README.md for reaching each kind of cluster)::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/raft.py
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/raft.py --members 5 --schedule partition-halves --duration-s 30 --seed 7

Theory of operation: the same as jobs/demo.py. The job's driver runs on the
head node with ``RAY_ADDRESS`` set, so the CLI's ``ensure_ray()`` joins the
cluster, and the members are spread over its nodes. ``--working-dir .``
uploads the project, and Ray puts the uploaded copy first on ``PYTHONPATH``.

Arguments: everything after ``jobs/raft.py`` goes to ``ddia-ray raft``
unchanged (``--members 3|5``, ``--clients N``, ``--keys N``,
``--duration-s S``, ``--schedule NAME``, ``--seed N``, ``--root URL``,
``--tick-s S``), and ``--no-progress`` is added unless it is already there,
because a job's output is a log file where a live bar becomes pages of
redrawn frames. Set ``DDIA_RAY_JOB_PROGRESS=1`` in the job's environment to
keep the bar. The default ``--root`` is a fresh temporary directory path:
each member writes under it on its own node's disk, which is all a
single-node cluster needs; on several nodes, where a killed member may be
restarted elsewhere, pass a URL every node reaches (``s3://...``,
``gs://...``) so it finds its log again.

The log ends with ``linearizable: yes`` / ``NO`` / ``unknown`` and the job's
exit status is the CLI's (0 only for yes), so a non-linearizable history is a
FAILED job.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared job helper beside this script
from cli_job import PROGRESS_ENV_VAR, job_args, run_cli  # noqa: E402

__all__ = ["PROGRESS_ENV_VAR", "job_args"]

if __name__ == "__main__":
    raise SystemExit(run_cli("raft"))
