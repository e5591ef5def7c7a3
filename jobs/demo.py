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

import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["PROGRESS_ENV_VAR", "job_args"]

#: Set to "1" in the job's environment to keep the live progress bar.
PROGRESS_ENV_VAR = "DDIA_RAY_JOB_PROGRESS"

_NO_PROGRESS_FLAG = "--no-progress"


def job_args(user_args: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """Return the arguments for ``ddia-ray demo``: the user's, in order, plus ``--no-progress``.

    ``--no-progress`` is appended only when it is missing and ``environ`` does
    not set :data:`PROGRESS_ENV_VAR` to ``"1"``; nothing else is changed.
    """
    args = list(user_args)
    wants_progress = environ.get(PROGRESS_ENV_VAR, "") == "1"
    if _NO_PROGRESS_FLAG not in args and not wants_progress:
        args.append(_NO_PROGRESS_FLAG)
    return args


def _make_project_importable() -> None:
    """Let ``python jobs/demo.py`` work from a plain checkout too.

    In a Ray job (``--working-dir``) or after ``pip install ddia-ray`` the
    package is already importable and nothing changes; only when it is not
    found is the repository root (this file's grandparent) put on sys.path.
    """
    if importlib.util.find_spec("ddia_ray") is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


if __name__ == "__main__":
    _make_project_importable()
    from ddia_ray.cli import main

    sys.argv[1:] = job_args(sys.argv[1:], os.environ)
    raise SystemExit(main(["demo", *sys.argv[1:]]))
