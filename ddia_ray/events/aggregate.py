"""Event-sourced aggregates: command methods record events, apply methods fold them into state.

Theory of operation
-------------------
An aggregate is the unit of consistency of an event-sourced model: one stream of events, named
by the aggregate's ``id``, whose left fold is the aggregate's current state. DDIA chapter 11
("Event Sourcing") separates the *command*, a request that may still be refused, from the
*event*, a fact that is immutable once recorded. So an aggregate has two kinds of method:

* a **command method** checks the request against the current state, raises
  :class:`~ddia_ray.errors.CommandRejectedError` when a rule of the domain forbids it, and
  otherwise records the fact with :meth:`Aggregate.trigger`;
* an **apply method** folds one event into the state. It is chosen by the event's class and
  declared with :func:`applies`, naming the classes (``@applies(UserCreated)``) or reading them
  from the type hint of its event parameter (bare ``@applies`` on ``def _(self, e: UserCreated)``).

``trigger`` runs the apply method at once, and loading runs the same method for every stored
event, so the state a command leaves is the state a reload rebuilds. Apply methods hold no rules:
rules change, recorded facts do not, so an old stream must replay under new rules.

The state is a codec record (frozen), named by the generic parameter: ``class User(Aggregate[
UserState])``, and an apply method replaces it (``self.state = replace(self.state, email=...)``).
We chose this over pyeventsourcing's free attributes plus a snapshot hook because:

1. a snapshot is exactly ``codec.encode(self.state)``, so it cannot forget a field;
2. old snapshots are upgraded on read by the state record's ``upgrades`` steps, as events are;
3. an apply method that raises leaves the old state in place (the state is one value), and the
   event is not recorded, so a command records its event and its effect or neither;
4. assigning ``state`` outside an apply method, or any other attribute, raises at once: a change
   with no event would vanish on the next load, the most common event-sourcing bug.

Versions follow the store: the first event is version 0, and :attr:`Aggregate.version` is the
version of the last event applied, pending ones included (-1: none). Each recorded event gets its
id (a UUID, or ``new_event_id()`` when injected) when it is recorded, so a save that is retried
sends the same ids and the store recognises it (see :mod:`.repository`).

Nothing here reads a clock, draws a random number (the ids come from :func:`.records.event_data`
or from the injected ``new_event_id``) or does I/O: loading and saving are the repository's.
An aggregate object is not thread-safe: concurrency between writers is the store's expected
version check, one aggregate object per thread of control.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Callable, ClassVar, Generic, Iterable, TypeVar, overload

from .. import codec
from ..errors import InvalidArgumentError, UnhandledEventError
from .records import AppendResult, EventData, RecordedEvent, check_stream, event_data

__all__ = ["Aggregate", "AggregateMeta", "applies"]

S = TypeVar("S")
A = TypeVar("A", bound="Aggregate")
F = TypeVar("F", bound=Callable[..., Any])

#: Attribute set on an apply method: the event classes it names (empty: read from its type hint).
_MARK = "__ddia_applies__"


def _event_class(c: Any, where: str) -> type:
    """``c`` if it is an event class (a codec record class)."""
    if not isinstance(c, type) or codec.record_type_of(c) is None or c is EventData:
        raise InvalidArgumentError(f"{where}: {c!r} is no event class; events are codec records "
                                   "(classes decorated with @ddia_ray.codec.record)")
    return c


@overload
def applies(fn: F, /) -> F: ...


@overload
def applies(*event_types: type) -> Callable[[F], F]: ...


def applies(*event_types: Any) -> Any:
    """Declare an apply method: ``@applies(UserCreated, ...)`` names the event classes it folds into
    the state; bare ``@applies`` reads them from the type hint of its event parameter (``def _(self,
    e: UserCreated)``, or ``e: A | B`` for several). Apply methods may all be named ``_``."""
    if len(event_types) == 1 and isinstance(event_types[0], types.FunctionType):
        setattr(event_types[0], _MARK, ())
        return event_types[0]
    if not event_types:
        raise InvalidArgumentError("@applies() names at least one event class; write it bare (@applies) to read "
                                   "the class from the event parameter's type hint")
    classes = tuple(_event_class(c, "@applies") for c in event_types)

    def mark(fn: F) -> F:
        if not isinstance(fn, types.FunctionType):
            raise InvalidArgumentError(f"@applies decorates a method (def _(self, event): ...), got {fn!r:.80}")
        setattr(fn, _MARK, classes)
        return fn

    return mark


def _hinted(owner: str, fn: Callable) -> tuple[type, ...]:
    """The event classes named by the type hint of ``fn``'s event parameter."""
    params = list(inspect.signature(fn).parameters)
    where = f"apply method {owner}.{fn.__name__} (line {fn.__code__.co_firstlineno})"
    if len(params) != 2:
        raise InvalidArgumentError(f"{where} takes (self, event), got ({', '.join(params)})")
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError) as e:
        raise InvalidArgumentError(f"{where}: its type hints cannot be resolved ({e}); define the event class at "
                                   f"module level, or name it: @applies(EventClass)") from e
    hint = hints.get(params[1])
    if hint is None:
        raise InvalidArgumentError(f"{where}: its event parameter has no type hint; write def _(self, e: "
                                   f"EventClass) or @applies(EventClass)")
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return tuple(_event_class(c, where) for c in members)


class _Namespace(dict):
    """A class body's namespace that also keeps every apply method, since several may be named ``_``
    (each ``def _`` replaces the previous one in the namespace)."""

    def __init__(self) -> None:
        super().__init__()
        self.appliers: list = []

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, types.FunctionType) and hasattr(value, _MARK):
            self.appliers.append(value)
        super().__setitem__(key, value)


class AggregateMeta(type):
    """The metaclass of :class:`Aggregate`: it builds each class's table of apply methods (by event
    class, inherited ones overridden by the subclass's) and finds its state record, so a mistake in
    either is an error when the class is defined, not when an event first arrives."""

    @classmethod
    def __prepare__(mcls, name: str, bases: tuple[type, ...], /, **kwds: Any) -> _Namespace:
        return _Namespace()

    def __new__(mcls, name: str, bases: tuple[type, ...], namespace: dict[str, Any], /, **kwds: Any) -> Any:
        is_base = not any(isinstance(b, AggregateMeta) for b in bases)
        if not is_base and "__init__" in namespace:
            raise InvalidArgumentError(f"aggregate {name} defines __init__: aggregates are built as cls(id) when "
                                       f"loaded, so put the starting state in the state record's defaults or in "
                                       f"initial_state()")
        cls: Any = super().__new__(mcls, name, bases, dict(namespace), **kwds)
        own: dict[type, Callable] = {}
        for fn in getattr(namespace, "appliers", ()):
            for event_cls in getattr(fn, _MARK) or _hinted(name, fn):
                if event_cls in own:
                    raise InvalidArgumentError(f"aggregate {name}: two apply methods take {event_cls.__name__} "
                                               f"(lines {own[event_cls].__code__.co_firstlineno} and "
                                               f"{fn.__code__.co_firstlineno}); keep one")
                own[event_cls] = fn
        table: dict[type, Callable] = {}
        for base in reversed(cls.__mro__[1:]):
            table.update(base.__dict__.get("_own_appliers", {}))
        table.update(own)
        cls._own_appliers = own
        cls._appliers = table
        state = _state_record(cls, namespace.get("__orig_bases__", ()))
        if state is not None:
            cls.State = state
        return cls


def _state_record(cls: type, orig_bases: tuple) -> type | None:
    """The state record named by ``class X(Aggregate[XState])``, checked; None when not named here."""
    for base in orig_bases:
        if isinstance(typing.get_origin(base), AggregateMeta):
            (arg,) = typing.get_args(base)
            if isinstance(arg, TypeVar):
                return None  # a generic intermediate base: its subclasses name the record
            if not isinstance(arg, type) or codec.record_type_of(arg) is None:
                raise InvalidArgumentError(f"aggregate {cls.__name__}: its state {arg!r} is no codec record; "
                                           f"declare it with @ddia_ray.codec.record so snapshots can store it")
            return arg
    return None


class Aggregate(Generic[S], metaclass=AggregateMeta):
    """An event-sourced aggregate (see the module docstring): ``id`` (its stream), ``version``,
    ``state`` (a ``S`` record) and the events recorded since it was loaded or saved.

    Subclass it as ``class User(Aggregate[UserState])``; write command methods that call
    :meth:`trigger` and apply methods marked with :func:`applies`. Do not define ``__init__``:
    the starting state is :meth:`initial_state`. ``new_event_id`` makes event ids deterministic
    (tests, simulations); by default each is a random UUID.
    """

    __slots__ = ("_id", "_version", "_pending", "_new_event_id", "_applying", "state")

    #: The state record class (the generic parameter); set by the metaclass.
    State: ClassVar[type]
    #: The apply method of each event class (the class's own and inherited ones).
    _appliers: ClassVar[dict[type, Callable]]
    _own_appliers: ClassVar[dict[type, Callable]]
    state: S
    _id: str
    _version: int
    _pending: list[tuple[Any, EventData]]
    _new_event_id: Callable[[], str] | None
    _applying: bool

    def __init__(self, id: str, *, new_event_id: Callable[[], str] | None = None) -> None:
        if getattr(type(self), "State", None) is None:
            name = type(self).__name__
            raise InvalidArgumentError(f"{name} names no state record: write class {name}(Aggregate[{name}State]) "
                                       f"with {name}State a codec record")
        if new_event_id is not None and not callable(new_event_id):
            raise InvalidArgumentError(f"new_event_id is a function returning an id str, got {new_event_id!r:.80}")
        object.__setattr__(self, "_id", check_stream(id))
        object.__setattr__(self, "_version", -1)
        object.__setattr__(self, "_pending", [])
        object.__setattr__(self, "_new_event_id", new_event_id)
        object.__setattr__(self, "_applying", False)
        object.__setattr__(self, "state", self._checked_state(self.initial_state()))

    @classmethod
    def initial_state(cls) -> Any:
        """The state before any event: ``State()``; override it when a field has no default."""
        try:
            return cls.State()
        except TypeError as e:
            raise InvalidArgumentError(f"{cls.__name__}: {cls.State.__name__}() failed ({e}); give every field "
                                       f"a default, or override {cls.__name__}.initial_state()") from e

    # --- identity and version ----------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The aggregate's id: the name of its stream."""
        return self._id

    @property
    def version(self) -> int:
        """The version of the last event applied, pending ones included (-1: no event yet)."""
        return self._version

    @property
    def pending(self) -> tuple:
        """The events recorded and not yet saved, oldest first."""
        return tuple(e for e, _ in self._pending)

    # --- recording ---------------------------------------------------------------------------------

    def trigger(self, event: Any) -> None:
        """Record ``event`` (a codec record): apply it to the state and keep it as pending.

        Raises :class:`~ddia_ray.errors.UnhandledEventError` if no apply method takes it; if its
        apply method raises, the state is left as it was and the event is not recorded."""
        if type(event) is EventData or codec.record_type_of(event) is None:
            raise InvalidArgumentError(f"trigger takes an event, a codec record instance; got "
                                       f"{type(event).__name__}")
        fn = self._applier(event)
        new_id = self._new_event_id
        # The id is chosen now, once: a save that is retried resends it, and the store recognises it.
        data = event_data(event, event_id=None if new_id is None else new_id())
        self._apply(fn, event)
        self._pending.append((event, data))
        object.__setattr__(self, "_version", self._version + 1)

    def pending_event_data(self) -> tuple[EventData, ...]:
        """The pending events as the store takes them (ids fixed when they were recorded)."""
        return tuple(d for _, d in self._pending)

    def collect_events(self) -> list:
        """Take the pending events out (pyeventsourcing's name), e.g. to store them yourself; the
        version stays. The repository calls :meth:`mark_saved` instead."""
        events = [e for e, _ in self._pending]
        self._pending.clear()
        return events

    def mark_saved(self, result: AppendResult) -> list:
        """The pending events were appended as ``result`` says: take them out and take the store's
        numbering (after a soft-deleted stream's old events, a new stream starts past them)."""
        n = len(self._pending)
        if type(result) is not AppendResult or result.stream != self._id or n == 0 \
                or result.next_expected_version - result.first_version + 1 != n:
            raise InvalidArgumentError(f"{type(self).__name__} {self._id!r}: {result!r:.200} is not the append "
                                       f"of its {n} pending events")
        object.__setattr__(self, "_version", result.next_expected_version)
        return self.collect_events()

    # --- loading -----------------------------------------------------------------------------------

    @classmethod
    def rebuild(cls: type[A], id: str, events: Iterable[RecordedEvent], *, snapshot: tuple[int, Any] | None = None,
                new_event_id: Callable[[], str] | None = None) -> A:
        """The aggregate ``id`` folded from ``snapshot`` (``(version, state)``, state as
        :meth:`decode_state` gives it) and then ``events`` (its stream's, in order, after it)."""
        aggregate = cls(id, new_event_id=new_event_id)
        if snapshot is not None:
            version, state = snapshot
            if type(version) is not int or version < 0:
                raise InvalidArgumentError(f"a snapshot's version is an int >= 0, got {version!r}")
            object.__setattr__(aggregate, "state", aggregate._checked_state(state))
            object.__setattr__(aggregate, "_version", version)
        for recorded in events:
            aggregate.replay(recorded)
        return aggregate

    def replay(self, recorded: RecordedEvent) -> None:
        """Fold one stored event into the state (no pending event): the next event of the stream."""
        if type(recorded) is not RecordedEvent or recorded.stream != self._id:
            raise InvalidArgumentError(f"{type(self).__name__} {self._id!r} replays RecordedEvents of its own "
                                       f"stream, got {recorded!r:.120}")
        if self._pending:
            raise InvalidArgumentError(f"{type(self).__name__} {self._id!r} has unsaved events: stored events "
                                       "cannot be replayed under them; load the aggregate again")
        # The first event may come after 0 (a stream recreated after a soft delete starts past its old
        # events); after it, the store numbers a stream's events without a gap.
        if recorded.version <= self._version or (self._version >= 0 and recorded.version != self._version + 1):
            raise InvalidArgumentError(f"{type(self).__name__} {self._id!r} at version {self._version} cannot "
                                       f"replay version {recorded.version}: replay the stream in order, none "
                                       f"missing")
        event = recorded.decode()  # an older version of the event is upgraded here, by the codec
        if codec.record_type_of(event) is None:
            raise UnhandledEventError(f"{type(self).__name__} {self._id!r}: stored event version {recorded.version} "
                                      f"({recorded.type!r}) holds a {type(event).__name__}, not an event record; "
                                      f"only codec records can be applied", aggregate=type(self).__name__,
                                      event_type=recorded.type)
        self._apply(self._applier(event), event)
        object.__setattr__(self, "_version", recorded.version)

    # --- snapshots ---------------------------------------------------------------------------------

    def encode_state(self) -> bytes:
        """The state as versioned msgpack: a snapshot at :attr:`version` (keep it only once the
        events up to that version are stored)."""
        return codec.encode(self.state)

    @classmethod
    def decode_state(cls, data: bytes) -> Any:
        """A state from :meth:`encode_state`'s bytes, upgraded from an older state version by the
        codec; raises :class:`~ddia_ray.errors.CodecError` for bytes that are no such state."""
        return codec.decode(data, expect=cls.State)

    # --- internals ---------------------------------------------------------------------------------

    def _applier(self, event: Any) -> Callable:
        table = type(self)._appliers
        for klass in type(event).__mro__:
            fn = table.get(klass)
            if fn is not None:
                return fn
        tag = codec.record_type_of(event).tag  # type: ignore[union-attr]  # checked by the callers
        known = sorted(c.__name__ for c in table)
        raise UnhandledEventError(f"{type(self).__name__} has no apply method for {type(event).__name__} "
                                  f"({tag!r}); add @applies def _(self, e: {type(event).__name__}) (it applies "
                                  f"{known})", aggregate=type(self).__name__, event_type=tag)

    def _apply(self, fn: Callable, event: Any) -> None:
        before = self.state
        object.__setattr__(self, "_applying", True)
        try:
            fn(self, event)
        except BaseException:
            object.__setattr__(self, "state", before)  # an apply either happens whole or not at all
            raise
        finally:
            object.__setattr__(self, "_applying", False)

    def _checked_state(self, state: Any) -> Any:
        if type(state) is not type(self).State:
            raise InvalidArgumentError(f"{type(self).__name__}.state is a {type(self).State.__name__}, got "
                                       f"{type(state).__name__}")
        return state

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "state" and self._applying:
            object.__setattr__(self, name, self._checked_state(value))
            return
        cls = type(self).__name__
        if name == "state":
            raise InvalidArgumentError(f"{cls}.state was assigned outside an apply method: a command records an "
                                       f"event with self.trigger(...) and the event's apply method changes the "
                                       f"state, or a reload would lose the change")
        raise InvalidArgumentError(f"{cls}.{name} cannot be set: an aggregate keeps what it knows in self.state "
                                   f"(a {type(self).State.__name__}), so snapshots and reloads keep all of it; add "
                                   f"a field there and set it in an apply method")

    def __delattr__(self, name: str) -> None:
        raise InvalidArgumentError(f"{type(self).__name__}.{name} cannot be deleted: an aggregate changes only "
                                   f"by applying events")

    def __reduce_ex__(self, protocol: Any) -> Any:
        # No pickle in ddia-ray (the codec is the one format), and a copy would share the pending ids.
        raise InvalidArgumentError(f"a {type(self).__name__} is not copied or pickled: pass its id and load it "
                                   f"from the repository, or pass its state (encode_state())")

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self._id!r} version={self._version} pending={len(self._pending)} "
                f"state={self.state!r}>")
