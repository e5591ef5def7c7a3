"""The schema registry on real Ray actors (a Raft group on the LSM engine): registrations under four
compatibility modes from several threads while the leader is killed, idempotent retries, connect()
from another handle, and compatible records end to end across two processes running different
versions of one @record class."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import pytest

from ddia_ray import codec
from ddia_ray.codec import record
from ddia_ray.errors import CallTimeoutError, ComponentNotFoundError, IncompatibleSchemaError
from ddia_ray.schema.registry import SchemaRegistry
from ddia_ray.schema.upcasting import record_frame

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def registry(ray_session, tmp_path_factory):
    reg = SchemaRegistry.launch(replicas=3, root=f"file://{tmp_path_factory.mktemp('registry')}")
    yield reg
    reg.shutdown(destroy_data=True)


def _schema(*fields: dict) -> dict:
    return {"type": "record", "name": "shop.Row", "fields": [{"name": "id", "type": "long"}, *fields]}


B = {"name": "b", "type": "string", "default": ""}
C = {"name": "c", "type": "int"}
D = {"name": "d", "type": "string", "default": "x"}
MODES = ("BACKWARD", "FORWARD", "FULL", "NONE")
# The evolution each subject goes through, and the modes that refuse each step: a field added without a
# default breaks BACKWARD (the new schema cannot read old data); a field removed that has no default
# breaks FORWARD (the old schema cannot read new data). Under FULL, c never arrives, so removing it is moot.
STEPS = (("add b", _schema(B), None, ()),
         ("add c", _schema(B, C), ("c", 0), ("BACKWARD", "FULL")),
         ("drop b and c, add d", _schema(D), None, ("FORWARD",)))


def _evolve(client, subject: str, answers: list) -> None:
    """Register the steps under ``subject``, recording each answer or refusal."""
    from ddia_ray.schema import AddField

    for _, avro, add, _ in STEPS:
        answers.append(_register(client, subject, avro, None if add is None else (AddField(*add),)))


def _register(client, subject, avro, migration):
    for _ in range(5):  # a call that timed out has an unknown outcome: the retry is idempotent
        try:
            return client.register(subject, avro, migration=migration)
        except IncompatibleSchemaError as e:
            return e
        except CallTimeoutError:
            continue
    raise AssertionError(f"{subject}: no answer in five tries")


def test_registrations_across_modes_survive_a_leader_kill(registry):
    with registry.client(timeout_s=30) as c:
        base = {m: c.register(f"rows-{m}", _schema()) for m in MODES}
        for m in MODES:
            c.set_compatibility(m, f"rows-{m}")
        answers: dict[str, list] = {m: [] for m in MODES}
        threads = [threading.Thread(target=_evolve, args=(c, f"rows-{m}", answers[m])) for m in MODES]
        old = registry.leader()
        for t in threads:
            t.start()
        registry.kill(old)  # mid-way: some registrations are in flight, some not yet sent
        for t in threads:
            t.join(120)
        assert registry.leader() != old  # the registrations after the kill went through a new leader
        registry.restart(old)
        for m in MODES:
            assert len(answers[m]) == len(STEPS), f"{m}: {answers[m]}"
            for (what, _, _, refused_by), answer in zip(STEPS, answers[m]):
                refused = isinstance(answer, IncompatibleSchemaError)
                assert refused == (m in refused_by), f"{m}, {what}: {answer}"
                if refused:  # every field named, with why, even across the actors
                    assert answer.incompatibilities and all(i.path in str(answer) for i in answer.incompatibilities)
            accepted = [a for a in answers[m] if not isinstance(a, IncompatibleSchemaError)]
            # every acknowledged registration is there, at the version its answer named, gap-free
            assert c.versions(f"rows-{m}") == [1] + [a.version for a in accepted] == list(range(1, len(accepted) + 2))
            for a in accepted:
                assert c.get(f"rows-{m}", a.version).id == a.id
        # one id per distinct schema: the subjects share the base schema's id; a repeat changes nothing
        assert len({a.id for a in base.values()}) == 1
        again = c.register("rows-NONE", _schema())
        assert (again.version, again.id) == (1, base["NONE"].id)


def test_connect_from_another_handle(registry, ray_session):
    from ddia_ray.replication import ReplicatedStore

    with registry.client() as c:
        c.register("connect-me", _schema(B))
    other = SchemaRegistry.connect(registry.name)
    with other.client() as c:
        assert c.get("connect-me").schema.field_names() == ("id", "b")
        assert "connect-me" in c.subjects()
    assert other.stats()["subjects"] >= 1
    plain = ReplicatedStore.launch(replicas=1, protocol="raft", engine="map")
    try:
        with pytest.raises(ComponentNotFoundError):
            SchemaRegistry.connect(plain.name)
    finally:
        plain.shutdown()


_OLD_PROCESS = textwrap.dedent('''
    """The older reader: version 1 of the customer record, and nothing newer."""
    import dataclasses, json, sys

    from ddia_ray import codec
    from ddia_ray.codec import record
    from ddia_ray.runtime import ensure_ray
    from ddia_ray.schema import can_read
    from ddia_ray.schema.registry import SchemaRegistry
    from ddia_ray.schema.upcasting import record_frame

    @record("tests.customer", version=1)
    class Customer:
        name: str
        email: str

    ensure_ray()
    client = SchemaRegistry.connect(sys.argv[1]).client()
    for line in sys.stdin:
        cmd, arg = json.loads(line)
        if cmd == "register":
            out = client.register_record(Customer).version
        elif cmd == "write":
            out = codec.encode(Customer("ann", "ann@old")).hex()
        else:  # read-modify-write of bytes a newer writer wrote
            data = bytes.fromhex(arg)
            history = client.history("tests.customer", record_frame(data)[1])
            problems = can_read(history.schema(1), history.schema(record_frame(data)[1]))
            changed = dataclasses.replace(codec.decode(data), email="ann@new")
            out = [codec.encode(changed).hex(), [str(p) for p in problems]]
        print(json.dumps(out), flush=True)
''')


def test_unknown_fields_survive_an_older_process_read_modify_write(registry, ray_session, tmp_path):
    script = tmp_path / "old_reader.py"
    script.write_text(_OLD_PROCESS)
    env = {**__import__("os").environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    old = subprocess.Popen([sys.executable, str(script), registry.name], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, env=env)

    def ask(cmd: str, arg=None):
        old.stdin.write(json.dumps([cmd, arg]) + "\n")
        old.stdin.flush()
        while True:  # the answer is the next line that is JSON (Ray may log on stdout first)
            line = old.stdout.readline()
            assert line, f"the old process ended (exit {old.poll()})"
            try:
                return json.loads(line)
            except ValueError:
                continue

    try:
        assert ask("register") == 1  # the old class is version 1 of the subject
        with registry.client() as c:

            @record("tests.customer", version=2, upgrades=c.codec_upgrades("tests.customer", up_to=2))
            class Customer:
                name: str
                email: str
                phone: str = "unknown"

            assert c.register_record(Customer).version == 2  # AddField("phone") inferred and stored
            # the old process's bytes, read here at version 2 by the registry's upgrade step
            assert codec.decode(bytes.fromhex(ask("write"))) == Customer("ann", "ann@old", "unknown")
            # the new process writes a phone; the old one reads, changes the email, writes back
            written, problems = ask("rmw", codec.encode(Customer("ann", "ann@old", "+31 20 555")).hex())
            assert problems == []  # the registry says version 1 reads version 2's data
            back = bytes.fromhex(written)
            assert record_frame(back)[1] == 2  # written back at the newer version it read
            assert codec.decode(back) == Customer("ann", "ann@new", "+31 20 555")  # the phone survived
    finally:
        old.stdin.close()
        old.wait(30)
