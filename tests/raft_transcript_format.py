"""How transcripts print Raft's data: one compact, deterministic line per message or entry.

Only the fields a message type uses are shown, plus any other field that is not at its
default, so an unexpected field in a message stands out in a transcript diff.
"""

from __future__ import annotations

import json

from ddia_ray.consensus.raft import CONF_CHANGE, NOOP, Entry, Message, SnapshotMeta

__all__ = ["format_message", "format_entry", "format_ids", "format_value", "format_meta"]

_TRANSFER_CONTEXT = 1  # the core marks a vote request caused by timeout_now with context 1


def format_ids(ids) -> str:
    """Comma-separated ids, ``-`` for none."""
    return ",".join(ids) if ids else "-"


def format_value(data) -> str:
    """An entry's data as JSON (repr when JSON cannot show it)."""
    try:
        return json.dumps(data)
    except TypeError:
        return repr(data)


def format_entry(e: Entry) -> str:
    """``term/index body``: ``2/4 noop``, ``1/1 add_voter(1)`` or ``2/5 "x"``."""
    if e.kind == NOOP:
        body = "noop"
    elif e.kind == CONF_CHANGE:
        body = f"{e.data.op}({e.data.node})"
    else:
        body = format_value(e.data)
    return f"{e.term}/{e.index} {body}"


def _format_entries(entries) -> str:
    """Entries as ``[term/index body, ...]``."""
    return "[" + ", ".join(format_entry(e) for e in entries) + "]"


def format_meta(meta: SnapshotMeta) -> str:
    """A snapshot's index, term and configuration."""
    out = f"index={meta.index} term={meta.term} voters={format_ids(meta.conf.voters)}"
    return out + (f" learners={format_ids(meta.conf.learners)}" if meta.conf.learners else "")


#: Fields always shown for a message type (others only when not at their default).
_ALWAYS = {
    "prevote": ("log_term", "index"), "vote": ("log_term", "index"), "app": ("log_term", "index", "commit", "entries"),
    "app_resp": ("index",), "heartbeat": ("commit",),
}
_ORDER = ("log_term", "index", "commit", "reject", "reject_hint", "context", "entries", "snapshot")


def format_message(m: Message) -> str:
    """One line: ``1->2 app term=2 log_term=1 index=3 commit=3 entries=[2/4 noop]``."""
    parts = [f"{m.src}->{m.dst} {m.type} term={m.term}"]
    always = _ALWAYS.get(m.type, ())
    for name in _ORDER:
        v = getattr(m, name)
        if name not in always and v in (0, False, (), None):
            continue
        if name == "reject":
            parts.append("reject")
        elif name == "reject_hint":
            parts.append(f"hint={v}")
        elif name == "context":
            transfer = m.type in ("vote", "prevote") and v == _TRANSFER_CONTEXT
            parts.append("transfer" if transfer else f"ctx={v}")
        elif name == "entries":
            parts.append(f"entries={_format_entries(v)}")
        elif name == "snapshot":
            parts.append(f"snapshot=({format_meta(v.meta)})")
        else:
            parts.append(f"{name}={v}")
    return " ".join(parts)
