"""Waiting for one actor call and turning Ray's failures into ddia-ray errors.

Every client in the project that blocks on a Ray ``ObjectRef`` goes through
:func:`get_result` (or, from an asyncio loop, :func:`await_result`), so a caller always sees
the same three outcomes: the value, :class:`CallTimeoutError` (the call is cancelled best-effort),
:class:`ActorUnavailableError` (the actor is dead or unreachable), or the
exception the remote method itself raised, with its own type.
"""

from __future__ import annotations

from typing import Any

from ..errors import ActorUnavailableError, CallTimeoutError

__all__ = ["get_result", "await_result"]


def get_result(ref: Any, timeout_s: float | None, what: str) -> Any:
    """``ray.get(ref)`` with ddia-ray errors; ``what`` names the callee in messages."""
    import ray

    try:
        return ray.get(ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError as e:
        ray.cancel(ref)
        raise CallTimeoutError(f"{what} did not answer within {timeout_s}s") from e
    except ray.exceptions.RayActorError as e:
        raise ActorUnavailableError(f"{what} is dead or unreachable: {type(e).__name__}") from e
    except ray.exceptions.RayTaskError as e:
        raise e.as_instanceof_cause() from None


async def await_result(ref: Any, timeout_s: float | None, what: str) -> Any:
    """:func:`get_result` for a client's own asyncio loop: the same three outcomes, awaited."""
    import asyncio

    import ray

    try:
        return await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout_s)
    except asyncio.TimeoutError as e:
        ray.cancel(ref)
        raise CallTimeoutError(f"{what} did not answer within {timeout_s}s") from e
    except ray.exceptions.RayActorError as e:
        raise ActorUnavailableError(f"{what} is dead or unreachable: {type(e).__name__}") from e
    except ray.exceptions.RayTaskError as e:
        raise e.as_instanceof_cause() from None
