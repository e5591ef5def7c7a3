"""The ddia-ray demo as a Ray job: `ddia-ray demo` run by a cluster's job supervisor.

Submit it from the repository root to any cluster whose dashboard you can reach
(see clusters/README.md for reaching each kind of cluster)::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/demo.py
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/demo.py --requests 5000 --replicas 5 --seed 7

Theory of operation: Ray's job supervisor starts this script as the job's
driver on the head node with ``RAY_ADDRESS`` set to that cluster, so the CLI's
``ensure_ray()`` joins the cluster instead of starting a private Ray.
``--working-dir .`` uploads the project and Ray puts the uploaded copy first
on ``PYTHONPATH``, so the ``ddia_ray`` that runs is the one you submitted,
even where the nodes have another version pip-installed.

Arguments: everything after ``jobs/demo.py`` goes to ``ddia-ray demo``
unchanged (``--requests N``, ``--replicas N``, ``--seed N``,
``--no-progress``), and ``--no-progress`` is added unless it is already there:
job output is a log file read with ``ray job logs``, where a live progress bar
becomes pages of redrawn frames. The final summary (ending with the line
``requests lost: <n>``) is printed either way. To keep the bar anyway, set
``DDIA_RAY_JOB_PROGRESS=1`` in the job's environment, e.g.
``--runtime-env-json '{"env_vars": {"DDIA_RAY_JOB_PROGRESS": "1"}}'``.
The exit status of the job is the CLI's, so a failed demo is a FAILED job.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared job helper beside this script
from cli_job import PROGRESS_ENV_VAR, job_args, run_cli  # noqa: E402

__all__ = ["PROGRESS_ENV_VAR", "job_args"]

if __name__ == "__main__":
    raise SystemExit(run_cli("demo"))
