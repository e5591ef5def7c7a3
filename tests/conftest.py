"""Shared fixtures: one Ray instance for the whole test session."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """Start (or join) a single local Ray for every integration test in the run."""
    import ray

    from ddia_ray.runtime.connect import ensure_ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ensure_ray()
    yield ray
    ray.shutdown()
