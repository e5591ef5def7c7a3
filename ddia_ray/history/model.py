"""Sequential specifications the linearizability checker tests histories against.

Theory of operation
-------------------
A :class:`Model` is a deterministic state machine: ``init()`` gives the
initial state, ``step(state, op)`` says whether ``op`` (with the output the
client saw) is legal in ``state`` and what state follows. States must be
hashable and compare by value: the checker caches ``(linearized ops, state)``
pairs (Lowe 2017) and merges equal states. ``step`` must look at an op's
``f``, ``key``, ``value``, ``output`` and ``status`` only (never its id,
process or times), so that the checker may treat identical ``info`` ops as
interchangeable. A model may also offer ``describe_op(op) -> str`` to word
counterexamples.

``partition(ops)`` splits a history into independent sub-histories. For a
key-value store every key is its own register, and linearizability is
*local* (Herlihy & Wing 1990, Theorem 1): the whole history is linearizable
iff every per-key sub-history is. Checking keys apart turns one search
exponential in the concurrency of the whole history into several small ones
(Horn & Kroening 2015, "Faster linearizability checking via
P-compositionality"; Porcupine and Knossos do the same).

An op whose status is ``info`` has an unknown output: the model must accept
any output for it, and it may take effect or not (the checker decides
which). :class:`KVModel` drops ``info`` reads at partition time: a read that
returned nothing observable constrains nothing, and keeping it would only
double the states to search.
"""

from __future__ import annotations

from typing import Any, Hashable, Protocol, Sequence, runtime_checkable

from ..errors import ConfigError, InvalidArgumentError
from .recorder import KV_FUNCTIONS, Operation

__all__ = ["Model", "KVModel", "KV_MODEL"]


@runtime_checkable
class Model(Protocol):
    """A sequential specification: what the checker needs from a data type."""

    def init(self) -> Hashable:
        """The state before any operation."""
        ...

    def step(self, state: Hashable, op: Operation) -> tuple[bool, Hashable]:
        """``(legal, next_state)`` for applying ``op`` in ``state``; ``next_state`` matters only if legal."""
        ...

    def partition(self, ops: Sequence[Operation]) -> list[tuple[Hashable, tuple[Operation, ...]]]:
        """Independent sub-histories as ``(label, ops)`` pairs, e.g. one per key.

        May drop ops that cannot change the verdict, and raises
        :class:`ConfigError` / :class:`InvalidArgumentError` for ops the model
        does not understand.
        """
        ...


class KVModel:
    """A map of independent registers; per key the state is the value, or ``None`` when absent.

    * ``read`` returns the current value (``None`` when absent);
    * ``write(v)`` sets it; ``delete`` makes it absent;
    * ``cas((expected, new))`` returns ``True`` and sets ``new`` when the
      current value equals ``expected`` (``None`` means absent), else returns
      ``False`` and changes nothing.

    Values compare with ``==``: as in Python, ``1``, ``1.0`` and ``True`` are
    the same value, and a list is not equal to a tuple (the codec turns lists
    into tuples, so record values as tuples).
    """

    def init(self) -> None:
        """Every key starts absent."""
        return None

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        """Apply one op to one register; an ``info`` op accepts any output."""
        f = op.f
        if f == "read":
            # An info read saw nothing (partition drops it); an ok read must see the value.
            return op.status == "info" or op.output == state, state
        if f == "write":
            return True, op.value
        if f == "cas":
            expected, new = op.value
            matches = state == expected
            if op.status == "info":
                return True, new if matches else state
            if op.output:
                return matches, new
            return not matches, state
        if f == "delete":
            return True, None
        raise ConfigError(f"the key-value model has no operation {f!r}")

    def partition(self, ops: Sequence[Operation]) -> list[tuple[Any, tuple[Operation, ...]]]:
        """One sub-history per key, in order of first appearance; ``info`` reads are dropped."""
        by_key: dict[Any, list[Operation]] = {}
        for op in ops:
            _check_kv_op(op)
            if op.f == "read" and op.status == "info":
                by_key.setdefault(op.key, [])  # the key still shows up in the per-key verdicts
                continue
            by_key.setdefault(op.key, []).append(op)
        return [(key, tuple(key_ops)) for key, key_ops in by_key.items()]

    def describe_op(self, op: Operation) -> str:
        """``cas('x', 1 -> 2) -> True``-style text (call and outcome) for counterexamples."""
        if op.f == "cas":
            expected, new = op.value
            call = f"cas({op.key!r}, {expected!r} -> {new!r})"
        elif op.f in ("read", "delete"):
            call = f"{op.f}({op.key!r})"
        else:
            call = f"{op.f}({op.key!r}, {op.value!r})"
        if op.status != "ok":
            return f"{call} -> ? ({op.status}{': ' + op.error if op.error else ''})"
        if op.f in ("read", "cas") or op.output is not None:
            return f"{call} -> {op.output!r}"
        return f"{call} -> ok"


def _check_kv_op(op: Operation) -> None:
    """Refuse ops the key-value model cannot judge, naming the op."""
    if not isinstance(op, Operation):
        raise InvalidArgumentError(f"expected an Operation, got {type(op).__name__}")
    if op.f not in KV_FUNCTIONS:
        raise ConfigError(f"op {op.op_id}: the key-value model has no operation {op.f!r}")
    if op.f == "cas":
        if not isinstance(op.value, (tuple, list)) or len(op.value) != 2:
            raise InvalidArgumentError(f"op {op.op_id}: cas takes value=(expected, new), got {op.value!r}")
        if op.status == "ok" and not isinstance(op.output, bool):
            raise InvalidArgumentError(f"op {op.op_id}: an ok cas must return True or False, got {op.output!r}")
        _state_value(op, op.value[1])
    elif op.f == "write":
        _state_value(op, op.value)


def _state_value(op: Operation, value: Any) -> None:
    """Written values become states, which the checker hashes."""
    try:
        hash(value)
    except TypeError:
        raise InvalidArgumentError(
            f"op {op.op_id}: written values must be hashable (use a tuple, not a list), got {value!r}"
        ) from None


#: The shared key-value model (it holds no state of its own).
KV_MODEL = KVModel()
