"""One handle convention: what one driver launches detached, another driver finds with connect(name)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from ddia_ray.errors import ComponentNotFoundError
from ddia_ray.kv import RaftKV
from ddia_ray.storage.node import StorageNode

pytestmark = pytest.mark.ray

_SECOND_DRIVER = textwrap.dedent("""
    import sys

    from ddia_ray.errors import ComponentNotFoundError
    from ddia_ray.kv import RaftKV
    from ddia_ray.storage.node import StorageNode

    store_name, kv_name = sys.argv[1], sys.argv[2]
    node = StorageNode.connect(store_name)
    client = node.client()
    assert client.get(b"from-first") == b"1", client.get(b"from-first")
    client.put_many({b"from-second": b"2"})
    client.close()
    kv = RaftKV.connect(kv_name)
    session = kv.client()
    assert session.get("k") == b"v1"
    session.put("k", b"v2")
    try:
        StorageNode.connect(kv_name)
    except ComponentNotFoundError as e:
        print("kind checked:", e)
    else:
        raise SystemExit("a RaftKV group was accepted as a StorageNode")
    print("second driver ok", sorted(node.stats()), kv.leader() in kv.members)
""")


def test_a_detached_component_is_found_by_connect_from_a_second_driver(ray_session, tmp_path):
    store_name, kv_name = f"conn-store-{uuid.uuid4().hex[:6]}", f"conn-kv-{uuid.uuid4().hex[:6]}"
    node = StorageNode.launch(store_name, f"file://{tmp_path}/db", engine="lsm", detached=True)
    kv = RaftKV.launch(3, name=kv_name, root=f"file://{tmp_path}/kv", detached=True)
    try:
        client = node.client()
        client.put_many({b"from-first": b"1"})
        kv.client().put("k", b"v1")
        env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
        done = subprocess.run([sys.executable, "-c", _SECOND_DRIVER, store_name, kv_name], env=env,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "second driver ok" in done.stdout and "kind checked" in done.stdout
        # What the second driver wrote is there for the first, through its own handles.
        assert client.get(b"from-second") == b"2"
        assert kv.client().get("k") == b"v2"
        # The detached actors outlived the second driver's exit; connecting here finds them too.
        again = StorageNode.connect(store_name)
        assert again.nodes == node.nodes and again.client().get(b"from-first") == b"1"
        client.close()
    finally:
        node.shutdown()
        kv.shutdown(destroy_data=True)
    with pytest.raises(ComponentNotFoundError):
        StorageNode.connect(store_name)
