"""Conflicting writes behind a partition as a Ray job: `ddia-ray conflicts` run by a cluster's job supervisor.

Submit it from the repository root to any cluster whose dashboard you can reach
(see clusters/README.md for reaching each kind of cluster)::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/conflicts.py
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/conflicts.py --regions us,eu,ap,sa --writes 200 --delay-s 0.1 --protocol leaderless

Theory of operation: the same as jobs/raft.py. The job's driver runs on the
head node with ``RAY_ADDRESS`` set, so the CLI's ``ensure_ray()`` joins the
cluster, and the store's replicas (one per region) are spread over its nodes;
the region clients, the convergence wait and the checkers run in the driver.
The store keeps its versions in memory (no ``--root``): the run needs no
shared storage.

Arguments: everything after ``jobs/conflicts.py`` goes to ``ddia-ray conflicts``
unchanged (``--regions``, ``--writes``, ``--keys``, ``--delay-s``, ``--skew-s``,
``--skew-region``, ``--protocol``, ``--timeout-s``, ``--seed``), and
``--no-progress`` is added unless it is already there or
``DDIA_RAY_JOB_PROGRESS=1`` is set.

The log ends with the table (one row per resolution: LWW, siblings, resolver,
CRDT counter, OR-set, text), the convergence time after healing, the checks
(``LWW writes lost: N of M, counted by the store: yes``, ``lost under siblings,
resolver and CRDTs: 0``, ``converged: yes``) and ``conflicts: ok`` or
``conflicts: FAILED``; the job's exit status is the CLI's (0 only for ok), so a
write lost under a resolution that must keep it, or an LWW loss the store did
not count, is a FAILED job.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared job helper beside this script
from cli_job import PROGRESS_ENV_VAR, job_args, run_cli  # noqa: E402

__all__ = ["PROGRESS_ENV_VAR", "job_args"]

if __name__ == "__main__":
    raise SystemExit(run_cli("conflicts"))
