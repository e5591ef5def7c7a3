"""Transcript ("data-driven") tests of the pure Raft core, in the style of etcd raft's ``rafttest``.

Theory of operation
-------------------
A transcript is a text file of blocks::

    # free comments: what the block shows and WHY its output is right
    <command> [args]
    ----
    <output>

A block's output ends at the first blank line (outputs never hold one; an
empty output is written ``ok``). :func:`run_transcript` runs every command
against one :class:`InteractionEnv` and returns the file with each output
replaced by what the command printed, so a test compares the two texts and a
rewrite (``DDIA_REWRITE=1``) only changes outputs, never comments.

The environment is a driver for several :class:`RaftNode` cores: an
in-memory network (one FIFO inbox per member; a message is held until a
``deliver-msgs``/``stabilize`` steps it, and is dropped *at delivery* if its
link is cut or its destination is down) and one "disk" per member, the list
of records a real driver persists (snapshot, then :class:`LogAppend`, then
hard state, before sending), which ``restart`` turns back into a core with
:func:`recover`. The state machine of a member is the tuple of the data of
the normal entries it applied; it travels in snapshots.

Commands (node ids are ``1``, ``2``, ...; ``all`` means every live member)::

    add-nodes N [learners=4,5] [pre-vote=B] [check-quorum=B] [election=10] [heartbeat=1]
                [max-entries=256] [max-inflight=64] [max-apply=4096] [randomized=false] [seed=0]
        The first call founds the group (learners= are its learners); later calls
        add empty members that join through membership changes. Options left
        out take RaftConfig's defaults. randomized=false (the default) pins each
        randomized election timeout to exactly ``election`` ticks.
    reset                          forget every member (start a new story)
    checkpoint <name>              rewind <name>   save / restore the whole environment
    tick <node|all> [n]            n ticks (default 1)
    tick-election <node>           tick until its election timer fires (a leader: check-quorum)
    process-ready <node...|all>    ready(): persist, send, apply (printed), then advance()
    deliver-msgs <node...|all> [from=ID] [type=T] [count=N] [drop=true]
                                   step the held messages to those nodes (or drop them)
    stabilize [node...]            process-ready and deliver among those nodes until quiet
    propose <node> <data> [data...] propose (several data: one propose_many)
    propose-conf-change <node> <add_voter|add_learner|remove> <id>
    read-index <node> <ctx>        transfer-leadership <from> <to>        compact <node>
    partition <ids> <ids> ...      comma-separated groups; unnamed nodes form one more group
    isolate <node>                 heal
    crash <node>                   restart <node>
    status <node...|all>           raft-log <node>
    step <node> <src>-><dst> <type> [term=..] [log_term=..] [index=..] [commit=..] [reject=true]
                [hint=..] [ctx=..]  hand a hand-made message straight to a core

After every call into a core, a change of (role, term, leader) is printed as
``~ <id> <role> term=<t> lead=<id|->``. Errors the core raises on purpose are
printed as ``error: <Type>: <message>`` so bad-input behaviour is part of a
transcript; an internal invariant violation is re-raised and fails the test.
"""

from __future__ import annotations

import copy
import random
import shlex

from ddia_ray._validate import InvariantViolation
from ddia_ray.codec import decode, encode
from ddia_ray.consensus.raft import (LEADER, NORMAL, ConfChange, LogAppend, Message,
                                     RaftConfig, RaftNode, recover)
from ddia_ray.errors import DdiaRayError, NotLeaderError
from raft_transcript_format import _format_entries, format_entry, format_ids, format_message, \
    format_meta, format_value

__all__ = ["run_transcript", "InteractionEnv", "TranscriptError", "format_message", "format_entry"]

_SEPARATOR = "----"
#: add-nodes options that set a RaftConfig field (left out: RaftConfig's default).
_CONFIG_OPTIONS = {"election": "election_ticks", "heartbeat": "heartbeat_ticks", "pre-vote": "pre_vote",
                   "check-quorum": "check_quorum", "max-entries": "max_entries_per_msg",
                   "max-inflight": "max_inflight_msgs", "max-apply": "max_apply_per_ready"}


class TranscriptError(Exception):
    """The transcript itself is malformed (unknown command, bad argument): a test bug, not a Raft one."""


class _FixedTimeoutRng(random.Random):
    """An rng whose randomized election timeout is always exactly ``election_ticks`` (offset 0)."""

    def randrange(self, *args, **kwargs):
        """Always the lowest value of the range."""
        return 0


# --- formatting -----------------------------------------------------------------


def _node_key(node_id: str):
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


# --- the environment ---------------------------------------------------------------


class _Member:
    """One member as a driver holds it: the core (None while crashed), its disk and its state machine."""

    def __init__(self, node_id: str, voters: tuple, learners: tuple, config: RaftConfig, rng_factory):
        self.id = node_id
        self.voters, self.learners = voters, learners  # constructor arguments, reused by restart
        self.config = config
        self.rng_factory = rng_factory
        self.records: list = []  # the durable log, in the order written
        self.applied_data: tuple = ()
        self.node: RaftNode | None = None
        self.seen: tuple | None = None

    def build(self) -> None:
        hs, snap, entries = recover(self.records)
        self.node = RaftNode(self.id, voters=self.voters, learners=self.learners, config=self.config,
                             rng=self.rng_factory(), hard_state=hs, snapshot=snap, entries=entries)
        self.applied_data = tuple(decode(snap.data)) if snap is not None else ()
        self.seen = self._state()

    def _state(self) -> tuple:
        n = self.node
        return (n.role, n.term, n.lead)

    def note(self, out: list) -> None:
        """Print a change of role, term or leader since the last note."""
        if self.node is None:
            return
        now = self._state()
        if now != self.seen:
            self.seen = now
            out.append(f"~ {self.id} {now[0]} term={now[1]} lead={now[2] or '-'}")


class InteractionEnv:
    """Raft cores wired through an in-memory network with per-member disks (see the module docstring)."""

    def __init__(self):
        self.members: dict[str, _Member] = {}
        self.inbox: dict[str, list[Message]] = {}
        self.cut: set[tuple[str, str]] = set()
        self.saved: dict[str, tuple] = {}

    # --- dispatch ------------------------------------------------------------------

    def handle(self, line: str) -> str:
        """Run one command line; returns its output (``ok`` when it printed nothing)."""
        tokens = shlex.split(line)
        cmd, args = tokens[0], tokens[1:]
        handler = getattr(self, "cmd_" + cmd.replace("-", "_"), None)
        if handler is None:
            raise TranscriptError(f"unknown command {cmd!r}")
        out: list[str] = []
        try:
            handler(args, out)
        except InvariantViolation:
            raise  # a bug in the core: fail the test, never record it as expected output
        except DdiaRayError as e:
            msg = str(e)
            if isinstance(e, NotLeaderError):
                msg += f" (leader hint: {e.leader_hint or '-'})"
            out.append(f"error: {type(e).__name__}: {msg}")
        except (IndexError, ValueError) as e:  # not from the core: the command line itself is wrong
            raise TranscriptError(f"bad arguments for {cmd}: {e}") from e
        return "\n".join(out) if out else "ok"

    # --- helpers -------------------------------------------------------------------

    def _live(self) -> list[str]:
        return [i for i in sorted(self.members, key=_node_key) if self.members[i].node is not None]

    def _member(self, node_id: str) -> _Member:
        if node_id not in self.members:
            raise TranscriptError(f"no member {node_id!r}")
        return self.members[node_id]

    def _node(self, node_id: str) -> RaftNode:
        m = self._member(node_id)
        if m.node is None:
            raise TranscriptError(f"member {node_id} is crashed")
        return m.node

    def _targets(self, args) -> list[str]:
        names = [a for a in args if "=" not in a]
        if names in ([], ["all"]):
            return self._live()
        return sorted((self._member(n).id for n in names), key=_node_key)

    @staticmethod
    def _kv(args) -> dict:
        return dict(a.split("=", 1) for a in args if "=" in a)

    @staticmethod
    def _bool(text: str) -> bool:
        if text not in ("true", "false"):
            raise TranscriptError(f"expected true or false, got {text!r}")
        return text == "true"

    def _call(self, node_id: str, out: list, fn, *args):
        """Call into the core of ``node_id``, then note its change of role, term or leader (if any)."""
        try:
            return fn(*args)
        finally:
            self.members[node_id].note(out)

    # --- membership of the environment ----------------------------------------------

    def cmd_add_nodes(self, args, out) -> None:
        """Found the group (first call) or add empty members that will join by membership change."""
        count = int(args[0])
        kv = self._kv(args[1:])
        unknown = set(kv) - set(_CONFIG_OPTIONS) - {"learners", "randomized", "seed"}
        if unknown:
            raise TranscriptError(f"unknown add-nodes options {sorted(unknown)}")
        config = RaftConfig(**{field: self._bool(kv[opt]) if field in ("pre_vote", "check_quorum") else int(kv[opt])
                               for opt, field in _CONFIG_OPTIONS.items() if opt in kv})
        randomized = self._bool(kv.get("randomized", "false"))
        seed = kv.get("seed", "0")
        start = len(self.members) + 1
        ids = [str(i) for i in range(start, start + count)]
        founding = not self.members
        learners = tuple(kv["learners"].split(",")) if "learners" in kv else ()
        if learners and not founding:
            raise TranscriptError("learners= only applies to the founding add-nodes")
        voters = tuple(i for i in ids if i not in learners) if founding else ()
        for node_id in ids:
            def rng_factory(node_id=node_id):
                return random.Random(f"{seed}/{node_id}") if randomized else _FixedTimeoutRng()
            m = _Member(node_id, voters, learners if founding else (), config, rng_factory)
            self.members[node_id] = m
            self.inbox[node_id] = []
            m.build()
            if founding:
                self._process_ready(m, [])  # the bootstrap ready: persist and apply the founding entries
                out.append(f"{node_id}: founding {'learner' if node_id in learners else 'voter'}, "
                           f"log={_format_entries(m.node.log.entries)} commit={m.node.log.committed}")
            else:
                out.append(f"{node_id}: empty member, joins through a membership change")

    def cmd_reset(self, args, out) -> None:
        """Forget every member and every message (a new story in the same file)."""
        saved = self.saved
        self.__init__()
        self.saved = saved

    def cmd_checkpoint(self, args, out) -> None:
        """``checkpoint <name>``: remember the whole environment (cores, disks, network) under ``name``."""
        self.saved[args[0]] = copy.deepcopy((self.members, self.inbox, self.cut))

    def cmd_rewind(self, args, out) -> None:
        """``rewind <name>``: go back to a checkpoint, to tell another ending of the same story."""
        if args[0] not in self.saved:
            raise TranscriptError(f"no checkpoint {args[0]!r}")
        self.members, self.inbox, self.cut = copy.deepcopy(self.saved[args[0]])

    # --- time ---------------------------------------------------------------------

    def cmd_tick(self, args, out) -> None:
        """``tick <node|all> [n]``."""
        targets = self._live() if args[0] == "all" else [args[0]]
        for _ in range(int(args[1]) if len(args) > 1 else 1):
            for t in targets:
                self._call(t, out, self._node(t).tick)

    def cmd_tick_election(self, args, out) -> None:
        """Tick until the node's election timer fires (for a leader: the check-quorum round)."""
        node = self._node(args[0])
        limit = node.config.election_ticks if node.role == LEADER else node.randomized_timeout
        for _ in range(max(1, limit - node.election_elapsed)):
            self._call(args[0], out, node.tick)

    # --- driver loop --------------------------------------------------------------

    def _process_ready(self, m: _Member, out: list) -> None:
        node = m.node
        rd = node.ready()
        out.append(f"> {m.id} handling ready")
        if rd.snapshot is not None:
            m.records.append(rd.snapshot)
            m.applied_data = tuple(decode(rd.snapshot.data))
            out.append(f"  snapshot {format_meta(rd.snapshot.meta)} data={format_value(list(m.applied_data))}")
        if rd.entries:
            m.records.append(LogAppend(rd.entries))
            out.append(f"  entries {_format_entries(rd.entries)}")
        if rd.hard_state is not None:
            m.records.append(rd.hard_state)
            hs = rd.hard_state
            out.append(f"  hard_state term={hs.term} vote={hs.vote or '-'} commit={hs.commit}")
        for msg in rd.messages:
            self.inbox.setdefault(msg.dst, []).append(msg)
            out.append("  " + format_message(msg))
        if rd.committed:
            m.applied_data += tuple(e.data for e in rd.committed if e.kind == NORMAL)
            out.append(f"  apply {_format_entries(rd.committed)}")
        for rs in rd.read_states:
            out.append(f"  read_state ctx={rs.context} index={rs.index}")
        if rd.dropped_reads:
            out.append(f"  dropped_reads {list(rd.dropped_reads)}")
        self._call(m.id, out, node.advance, rd)

    def cmd_process_ready(self, args, out) -> None:
        """``process-ready <node...|all>``: handle the ready of each node that has one."""
        for t in self._targets(args):
            m = self._member(t)
            if m.node is not None and m.node.has_ready():
                self._process_ready(m, out)

    def _deliverable(self, msg: Message) -> str:
        """Why ``msg`` cannot be delivered now ('' if it can)."""
        dst = self.members.get(msg.dst)
        if dst is None:
            return "no such node"
        if dst.node is None:
            return f"{msg.dst} is down"
        if (msg.src, msg.dst) in self.cut:
            return "partitioned"
        return ""

    def _deliver(self, target: str, out: list, *, srcs=None, mtype=None, count=None, drop=False) -> int:
        queue = self.inbox.get(target, [])
        chosen = [m for m in queue if (srcs is None or m.src in srcs) and (mtype is None or m.type == mtype)]
        chosen = chosen[:count] if count is not None else chosen
        if not chosen:
            return 0
        self.inbox[target] = [m for m in queue if not any(m is c for c in chosen)]
        header = False
        for msg in chosen:
            why = "dropped by the test" if drop else self._deliverable(msg)
            if why:
                out.append(f"  dropped ({why}): {format_message(msg)}")
                continue
            if not header:
                out.append(f"> {target} receiving messages")
                header = True
            out.append("  " + format_message(msg))
            try:
                self._call(target, out, self.members[target].node.step, msg)
            except InvariantViolation:
                raise
            except DdiaRayError as e:
                out.append(f"  error: {type(e).__name__}: {e}")
        return len(chosen)

    def cmd_deliver_msgs(self, args, out) -> None:
        """``deliver-msgs <node...|all> [from=ID] [type=T] [count=N] [drop=true]``."""
        kv = self._kv(args)
        if set(kv) - {"from", "type", "count", "drop"}:
            raise TranscriptError(f"unknown deliver-msgs options {sorted(set(kv) - {'from', 'type', 'count', 'drop'})}")
        names = [a for a in args if "=" not in a]
        targets = sorted(self.inbox, key=_node_key) if names in ([], ["all"]) else names
        for t in targets:
            self._deliver(t, out, srcs={kv["from"]} if "from" in kv else None, mtype=kv.get("type"),
                          count=int(kv["count"]) if "count" in kv else None, drop=self._bool(kv.get("drop", "false")))

    def cmd_stabilize(self, args, out) -> None:
        """Process readies and deliver messages among the named nodes (default: all) until nothing moves."""
        chosen = set(a for a in args if "=" not in a)
        for _ in range(200):
            names = chosen or set(self.members) | set(self.inbox)
            moved = False
            for t in self._live():
                if t in names and self.members[t].node.has_ready():
                    self._process_ready(self.members[t], out)
                    moved = True
            for t in sorted(self.inbox, key=_node_key):
                if t in names and self._deliver(t, out, srcs=names):
                    moved = True
            if not moved:
                return
        raise TranscriptError("stabilize did not converge in 200 rounds")

    # --- client calls -------------------------------------------------------------

    def cmd_propose(self, args, out) -> None:
        """``propose <node> <data> [data...]``: prints the assigned index(es)."""
        node = self._node(args[0])
        if len(args) == 2:
            out.append(f"index {self._call(args[0], out, node.propose, args[1])}")
        else:
            out.append(f"indexes {self._call(args[0], out, node.propose_many, args[1:])}")

    def cmd_propose_conf_change(self, args, out) -> None:
        """``propose-conf-change <node> <op> <id>``."""
        node = self._node(args[0])
        out.append(f"index {self._call(args[0], out, node.propose_conf_change, ConfChange(args[1], args[2]))}")

    def cmd_read_index(self, args, out) -> None:
        """``read-index <node> <ctx>``."""
        node = self._node(args[0])
        self._call(args[0], out, node.read_index, int(args[1]))

    def cmd_transfer_leadership(self, args, out) -> None:
        """``transfer-leadership <from> <to>``."""
        node = self._node(args[0])
        self._call(args[0], out, node.transfer_leadership, args[1])

    def cmd_compact(self, args, out) -> None:
        """Snapshot the state machine at ``applied`` and drop the log up to there.

        The driver writes the snapshot and then the entries it had persisted after that point (a
        snapshot record replaces the durable log, see :func:`recover`); unpersisted entries follow
        in later readies as usual.
        """
        m = self._member(args[0])
        node = self._node(args[0])
        snap = self._call(args[0], out, node.compact, encode(m.applied_data))
        m.records.append(snap)
        kept = tuple(e for e in node.log.entries if e.index < node.log.unstable)
        if kept:
            m.records.append(LogAppend(kept))
        out.append(f"snapshot {format_meta(snap.meta)} data={format_value(list(decode(snap.data)))}")
        out.append(f"log now {self._range(node)}")

    # --- faults ---------------------------------------------------------------------

    def cmd_partition(self, args, out) -> None:
        """``partition 1,2 3``: nodes in different groups cannot talk (unnamed nodes form one more group)."""
        groups = [set(a.split(",")) for a in args]
        named = set().union(*groups) if groups else set()
        rest = set(self.members) - named
        if rest:
            groups.append(rest)
        where = {n: i for i, g in enumerate(groups) for n in g}
        self.cut = {(a, b) for a in self.members for b in self.members if where[a] != where[b]}

    def cmd_isolate(self, args, out) -> None:
        """``isolate <node>``: cut every link to and from it."""
        self._member(args[0])
        self.cut |= {(a, b) for a in self.members for b in self.members if (a == args[0]) != (b == args[0])}

    def cmd_heal(self, args, out) -> None:
        """Every link works again."""
        self.cut = set()

    def cmd_crash(self, args, out) -> None:
        """The member loses everything it did not persist; messages it already sent stay in flight."""
        m = self._member(args[0])
        m.node = None
        self.inbox[args[0]] = []

    def cmd_restart(self, args, out) -> None:
        """Rebuild the member from its disk (the constructor arguments a driver would pass)."""
        m = self._member(args[0])
        if m.node is not None:
            raise TranscriptError(f"member {args[0]} is not crashed")
        m.build()
        n = m.node
        snap = f" snapshot={n.log.snap_index}/{n.log.snap_term}" if n.log.snap_index else ""
        out.append(f"{m.id} recovered: term={n.term} vote={n.vote or '-'} commit={n.log.committed}{snap} "
                   f"log={self._range(n)} data={format_value(list(m.applied_data))}")

    # --- inspection -------------------------------------------------------------------

    @staticmethod
    def _range(node: RaftNode) -> str:
        lo, hi = node.log.first_index(), node.log.last_index()
        return f"{lo}..{hi}" if lo <= hi else f"empty after {hi}"

    def cmd_status(self, args, out) -> None:
        """One line per member (role, term, marks, configuration, timer) plus a leader's progress."""
        for t in self._targets(args):
            m = self._member(t)
            if m.node is None:
                out.append(f"{t} down")
                continue
            n, log = m.node, m.node.log
            timeout = n.config.election_ticks if n.role == LEADER else n.randomized_timeout
            snap = f" snap={log.snap_index}/{log.snap_term}" if log.snap_index else ""
            out.append(f"{t} {n.role} term={n.term} vote={n.vote or '-'} lead={n.lead or '-'} "
                       f"commit={log.committed} applied={log.applied}{snap} log={self._range(n)} "
                       f"voters={format_ids(n.conf.voters)} learners={format_ids(n.conf.learners)} "
                       f"timer={n.election_elapsed}/{timeout}")
            if n.role == LEADER:
                for peer, pr in sorted(n.progress.items(), key=lambda kv: _node_key(kv[0])):
                    extra = f" inflight={len(pr.inflights)}/{pr.max_inflight}" if pr.state == "replicate" else ""
                    extra += " paused" if pr.is_paused() else ""
                    extra += f" pending_snapshot={pr.pending_snapshot}" if pr.state == "snapshot" else ""
                    out.append(f"  {peer}: match={pr.match} next={pr.next} {pr.state}{extra}")
                if n.transferee:
                    out.append(f"  transferring leadership to {n.transferee}")
                if n.pending_reads or n.read_rounds:
                    rounds = ", ".join(f"ctx={r.context} index={r.index} acks={format_ids(sorted(r.acks, key=_node_key))}"
                                       for r in n.read_rounds)
                    out.append(f"  reads waiting for a commit of this term: {n.pending_reads}; rounds: [{rounds}]")

    def cmd_raft_log(self, args, out) -> None:
        """The entries a member holds in memory (after its snapshot point) and its applied data."""
        n = self._node(args[0])
        if n.log.snap_index:
            out.append(f"snapshot index={n.log.snap_index} term={n.log.snap_term}")
        out.extend(format_entry(e) for e in n.log.entries)
        out.append(f"applied data={format_value(list(self.members[args[0]].applied_data))}")

    def cmd_step(self, args, out) -> None:
        """Hand a hand-made message to a core (``step <node> <src>-><dst> <type> field=value...``)."""
        src, _, dst = args[1].partition("->")
        kv = self._kv(args[3:])
        fields = {"term": 0}
        for key, name in (("term", "term"), ("log_term", "log_term"), ("index", "index"), ("commit", "commit"),
                          ("hint", "reject_hint"), ("ctx", "context")):
            if key in kv:
                fields[name] = int(kv.pop(key))
        if "reject" in kv:
            fields["reject"] = self._bool(kv.pop("reject"))
        if kv:
            raise TranscriptError(f"unknown message fields {sorted(kv)}")
        msg = Message(args[2], src, dst, **fields)
        out.append("  " + format_message(msg))
        self._call(args[0], out, self._node(args[0]).step, msg)


# --- files -----------------------------------------------------------------------------


def run_transcript(text: str, path: str = "<transcript>") -> str:
    """Run every block of ``text``; return the text with each output replaced by the actual one."""
    env = InteractionEnv()
    lines = text.splitlines()
    result: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            result.append(line)
            i += 1
            continue
        if i + 1 >= len(lines) or lines[i + 1] != _SEPARATOR:
            raise TranscriptError(f"{path}:{i + 1}: a command must be followed by a '{_SEPARATOR}' line")
        command, where = line, i + 1
        i += 2
        while i < len(lines) and lines[i].strip():
            i += 1  # the old output, replaced below
        try:
            output = env.handle(command)
        except TranscriptError as e:
            raise TranscriptError(f"{path}:{where}: {command}: {e}") from e
        result += [command, _SEPARATOR, *output.splitlines()]
    return "\n".join(result) + "\n"
