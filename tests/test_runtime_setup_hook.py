"""``ensure_ray`` runs a runtime environment's worker setup hook in the driver as well (no Ray needed here)."""

from __future__ import annotations

import sys
import types

import pytest

from ddia_ray.errors import RuntimeNotReadyError
from ddia_ray.runtime.connect import _run_setup_hook_here


@pytest.fixture
def hook_module(monkeypatch):
    module = types.ModuleType("ddia_hook_probe")
    module.calls = []
    module.setup = lambda: module.calls.append("ran")

    def broken():
        raise ValueError("no plugins today")

    module.broken = broken
    monkeypatch.setitem(sys.modules, "ddia_hook_probe", module)
    return module


def test_a_hook_given_as_a_path_runs_in_the_driver(hook_module):
    _run_setup_hook_here({"worker_process_setup_hook": "ddia_hook_probe.setup", "env_vars": {}})
    assert hook_module.calls == ["ran"]


@pytest.mark.parametrize("env", [None, {}, {"env_vars": {"A": "1"}}, {"worker_process_setup_hook": lambda: None}])
def test_no_hook_or_a_callable_one_is_left_to_ray(hook_module, env):
    _run_setup_hook_here(env)
    assert hook_module.calls == []


def test_a_failing_hook_fails_the_driver_naming_it(hook_module):
    with pytest.raises(RuntimeNotReadyError, match="ddia_hook_probe.broken.*no plugins today"):
        _run_setup_hook_here({"worker_process_setup_hook": "ddia_hook_probe.broken"})
