"""The ``ddia-ray demo`` job and the replica core it balances load over.

:class:`ReplicaCore` is a small pure core that serves :class:`Work` (a deterministic digest, so
every answer can be checked against :func:`expected_digest`) and :class:`Ping`; examples and tests
put it behind a balancer. :func:`run_demo` and :func:`run_storage_demo` are the two parts of
``ddia-ray demo``.
"""

from .replica import Ping, Pong, ReplicaCore, Work, WorkResult, expected_digest
from .run import run_demo
from .storage import run_storage_demo

__all__ = ["ReplicaCore", "Work", "WorkResult", "Ping", "Pong", "expected_digest", "run_demo", "run_storage_demo"]
