"""What every job script in this directory shares: run a ``ddia-ray`` subcommand as a Ray job.

Theory of operation: Ray's job supervisor starts a job script as the job's
driver on the head node with ``RAY_ADDRESS`` set to that cluster, so the CLI's
``ensure_ray()`` joins the cluster instead of starting a private Ray.
``--working-dir .`` uploads the project and Ray puts the uploaded copy first
on ``PYTHONPATH``, so the ``ddia_ray`` that runs is the one you submitted.
A job's output is a log file read with ``ray job logs``, where a live progress
bar becomes pages of redrawn frames, so ``--no-progress`` is added unless the
user passed it or set :data:`PROGRESS_ENV_VAR` to ``"1"``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["PROGRESS_ENV_VAR", "job_args", "run_cli"]

#: Set to "1" in the job's environment to keep the live progress bar.
PROGRESS_ENV_VAR = "DDIA_RAY_JOB_PROGRESS"

_NO_PROGRESS_FLAG = "--no-progress"


def job_args(user_args: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """Return the arguments for the subcommand: the user's, in order, plus ``--no-progress``.

    ``--no-progress`` is appended only when it is missing and ``environ`` does
    not set :data:`PROGRESS_ENV_VAR` to ``"1"``; nothing else is changed.
    """
    args = list(user_args)
    wants_progress = environ.get(PROGRESS_ENV_VAR, "") == "1"
    if _NO_PROGRESS_FLAG not in args and not wants_progress:
        args.append(_NO_PROGRESS_FLAG)
    return args


def _make_project_importable() -> None:
    """Let ``python jobs/<script>.py`` work from a plain checkout too.

    In a Ray job (``--working-dir``) or after ``pip install ddia-ray`` the
    package is already importable and nothing changes; only when it is not
    found is the repository root (this file's grandparent) put on sys.path.
    """
    if importlib.util.find_spec("ddia_ray") is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def run_cli(subcommand: str) -> int:
    """Run ``ddia-ray <subcommand>`` with this process's arguments (see :func:`job_args`); its exit status."""
    _make_project_importable()
    from ddia_ray.cli import main

    return main([subcommand, *job_args(sys.argv[1:], os.environ)])
