"""The one name registry (ddia_ray/registry.py) that engines, pickers, resolvers, handlers, procedures and
conversions share."""

from __future__ import annotations

import threading

import pytest

from ddia_ray.errors import ConfigError, InvalidArgumentError
from ddia_ray.registry import Registry


def one():
    return 1


def two():
    return 2


def test_register_look_up_and_repeat():
    reg: Registry = Registry("widget", {"builtin": two})
    assert reg.register("w", one) is one
    assert reg.register("w", one) is one  # the same thing again: a no-op
    assert reg.get("w") is one and reg.view["builtin"] is two and "w" in reg and len(reg) == 2
    with pytest.raises(ConfigError, match="widget 'w' is already registered"):
        reg.register("w", two)
    assert reg.register("w", two, replace=True) is two
    with pytest.raises(TypeError):
        reg.view["x"] = one  # type: ignore[index]  # the view is read-only


def test_unregister_removes_only_what_the_name_means():
    reg: Registry = Registry("widget")
    reg.register("w", one)
    assert not reg.unregister("w", two) and reg.get("w") is one
    assert reg.unregister("w", one) and "w" not in reg
    assert not reg.unregister("w", one)


def test_an_unknown_name_names_the_known_ones_and_the_hint():
    reg: Registry = Registry("widget", {"a": one}, hint="; load its plugin")
    with pytest.raises(ConfigError, match=r"unknown widget 'zz'; known: \['a'\]; load its plugin"):
        reg.get("zz")
    assert reg.names(("b",)) == ["a", "b"]


def test_check_wraps_and_refuses_and_same_decides_what_repeats():
    class Wrapped:
        def __init__(self, fn):
            self.fn = fn

        def __eq__(self, other):
            return isinstance(other, Wrapped) and other.fn is self.fn

        __hash__ = object.__hash__

    def check(name, thing):
        if not callable(thing):
            raise InvalidArgumentError(f"{name} is not callable")
        return Wrapped(thing)

    reg: Registry = Registry("resolver", check=check, same=lambda a, b: a == b, taken=InvalidArgumentError)
    kept = reg.register("r", one)
    assert isinstance(kept, Wrapped) and reg.register("r", one) == kept  # wrapped again: equal, a no-op
    with pytest.raises(InvalidArgumentError, match="already registered"):
        reg.register("r", two)
    with pytest.raises(InvalidArgumentError, match="not callable"):
        reg.register("x", 42)
    assert not reg.unregister("r", 42) and reg.unregister("r", one)  # by the function it was given


@pytest.mark.parametrize("name", ["", None, 3])
def test_names_are_non_empty_strings(name):
    with pytest.raises(InvalidArgumentError):
        Registry("widget").register(name, one)


def test_concurrent_registrations_of_one_name_leave_exactly_one_winner():
    reg: Registry = Registry("widget")
    functions = [lambda i=i: i for i in range(16)]
    won, barrier = [], threading.Barrier(len(functions))

    def claim(fn):
        barrier.wait()
        try:
            reg.register("w", fn)
            won.append(fn)
        except ConfigError:
            pass

    threads = [threading.Thread(target=claim, args=(fn,)) for fn in functions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and reg.get("w") is won[0]
