"""The copy-on-write B+tree over a :class:`~ddia_ray.storage.btree.pagefile.PageFile`.

Theory of operation
-------------------
Same shape as :class:`~ddia_ray.storage.btree.bplustree.BPlusTree`, but
nodes live in pages and are sized in *bytes*: a node splits when its
encoding would exceed the page payload, and merges with a sibling (then
re-splits evenly if the pair is too big: a borrow) when it falls below a
quarter page. Keys are limited to 1/8 of a page and values above
``inline_value_max`` (also at most 1/8 page) go to overflow pages, so any
entry fits four times in a node and every split yields two fitting halves.

Copy-on-write (DDIA ch. 3, "B-tree optimizations"; LMDB): a transaction
never modifies a committed node. The first change to a node copies it into
a *dirty* node object held by its (also dirty) parent; the committed page
is handed to :meth:`PageFile.free`, which keeps it for older readers. At
commit, dirty nodes are written bottom-up into fresh pages and the new root
page goes into the meta page. A child reference is therefore either a page
number (``int``: committed, shared) or a :class:`Node` (dirty, private to
the transaction). Without sibling pointers (they would force copying the
whole leaf chain), range scans walk with a stack of ancestors.

Node payload (msgpack)::

    leaf   := [keys: [bin*], values: [(bin | [head_page, length])*]]   # kind LEAF
    branch := [keys: [bin*], children: [page*]]                        # kind BRANCH, len(children) = len(keys) + 1

Decoding trusts nothing, checksum or not (a page can be forged with a valid
one): :meth:`NodeStore.load` checks the exact shape above, strictly
ascending keys, page numbers >= 2 and overflow lengths >= 0, with msgpack's
size limits bounded by the page, and raises :class:`CorruptionError`
otherwise. Every descent stops at :data:`MAX_HEIGHT` levels, so a cycle of
page references is an error rather than an endless loop; a scan also checks
that keys keep ascending across leaves, so a page shared by two parents
cannot make it yield a key twice.
"""

from __future__ import annotations

import bisect
import operator
from typing import Iterator

import msgpack

from ..._validate import invariant
from ...errors import CorruptionError
from .pagefile import BRANCH, LEAF, PageFile

__all__ = ["Node", "NodeStore", "TreeWriter", "tree_get", "tree_scan", "build_tree", "check_tree", "tree_pages",
           "MAX_HEIGHT"]

_NODE_OVERHEAD = 16   # msgpack array headers
_ENTRY_OVERHEAD = 10  # bin/uint headers of one entry (upper bound)
_REF_BYTES = 20       # an encoded [head_page, length] overflow reference (upper bound)
#: No real tree gets near this: a branch has >= 2 children, so height <= log2(pages) < 64.
MAX_HEIGHT = 64


class Node:
    """A decoded node: ``vals`` are values (leaf) or child references (branch)."""

    __slots__ = ("leaf", "keys", "vals", "nbytes")

    def __init__(self, leaf: bool, keys: list, vals: list, nbytes: int = 0):
        self.leaf, self.keys, self.vals, self.nbytes = leaf, keys, vals, nbytes

    def measure(self) -> int:
        """Upper bound of the encoded size, kept in ``nbytes``."""
        size = _NODE_OVERHEAD + sum(map(len, self.keys)) + _ENTRY_OVERHEAD * len(self.vals)
        if self.leaf:
            size += sum(len(v) if type(v) is bytes else _REF_BYTES for v in self.vals)
        else:
            size += 9 * len(self.vals)
        self.nbytes = size
        return size


def _entry_bytes(leaf: bool, key: bytes, val) -> int:
    if leaf:
        return len(key) + _ENTRY_OVERHEAD + (len(val) if type(val) is bytes else _REF_BYTES)
    return len(key) + _ENTRY_OVERHEAD + 9


_BYTES = frozenset({bytes})
_INT = frozenset({int})


def _shape_problem(leaf: bool, decoded) -> str | None:
    """Why ``decoded`` is not a node of the grammar in the module docstring (None: it is).

    Runs on every page a read decodes, so the common checks are C-level passes over a list
    (``map`` of a type or a bound comparison) rather than a Python loop per entry.
    """
    if type(decoded) is not list or len(decoded) != 2 or type(decoded[0]) is not list \
            or type(decoded[1]) is not list:
        return "is not a [keys, values] pair"
    keys, vals = decoded
    # The type check comes first, so the comparisons only ever meet bytes (operator.lt is the
    # fastest C-level comparison here: a third of bytes.__lt__'s cost per call).
    if not _BYTES.issuperset(map(type, keys)) or not all(map(operator.lt, keys, keys[1:])):
        return "has keys that are not strictly ascending byte strings"
    if not leaf:
        if len(vals) != len(keys) + 1 or not keys:
            return f"is a branch with {len(keys)} keys and {len(vals)} children"
        if not _INT.issuperset(map(type, vals)) or min(vals) < 2:
            return "is a branch with a child that is not a page number"
        return None
    if len(vals) != len(keys):
        return f"is a leaf with {len(keys)} keys and {len(vals)} values"
    if _BYTES.issuperset(map(type, vals)):
        return None  # no overflow references: the common leaf
    for v in vals:
        if type(v) is not bytes and not (type(v) is list and len(v) == 2 and type(v[0]) is int
                                         and type(v[1]) is int and v[0] >= 2 and v[1] >= 0):
            return "is a leaf with a value that is neither bytes nor an overflow reference"
    return None


def _too_deep(store: "NodeStore", root) -> CorruptionError:
    return CorruptionError(f"the tree at page {root} is more than {MAX_HEIGHT} levels deep: "
                           "a cycle of page references", store.pf.path)


class NodeStore:
    """Decoded-node cache in front of one page file (committed pages never change while referenced)."""

    def __init__(self, pagefile: PageFile, cache_pages: int = 8192):
        self.pf = pagefile
        self.cache: dict[int, Node] = {}
        self.cache_pages = cache_pages

    def load(self, page: int) -> Node:
        """The committed node at ``page``."""
        node = self.cache.get(page)
        if node is not None:
            return node
        kind, payload = self.pf.read_any(page)
        if kind not in (LEAF, BRANCH):
            raise CorruptionError(f"page {page} is of kind {kind}, expected a tree node", self.pf.path)
        problem = None
        try:  # unpackb bounds every length by the payload's own size; maps, strs, exts fail the shape check
            decoded = msgpack.unpackb(payload, use_list=True)
        except Exception as exc:  # noqa: BLE001 - a valid checksum over undecodable bytes: a bug or a forged page
            problem = f"does not decode as a node: {type(exc).__name__}"
        else:
            problem = _shape_problem(kind == LEAF, decoded)
        if problem is not None:
            raise CorruptionError(f"page {page} {problem}", self.pf.path)
        node = Node(kind == LEAF, decoded[0], decoded[1])
        self._remember(page, node)
        return node

    def _remember(self, page: int, node: Node) -> None:
        cache = self.cache
        if len(cache) >= self.cache_pages:
            del cache[next(iter(cache))]  # FIFO eviction: cheap, and hot upper levels come right back
        cache[page] = node

    def resolve(self, ref) -> Node:
        """A node from a reference: a page number (committed) or a dirty node itself."""
        return self.load(ref) if type(ref) is int else ref

    def write(self, node: Node) -> int:
        """Stage ``node`` (whose children are all page numbers) into a fresh page."""
        page = self.pf.allocate()
        payload = msgpack.packb((node.keys, node.vals), use_bin_type=True)
        self.pf.stage(page, LEAF if node.leaf else BRANCH, payload)
        self._remember(page, node)
        return page

    def value(self, val) -> bytes:
        """An inline value as is, an overflow reference read back."""
        return val if type(val) is bytes else self.pf.read_overflow(val[0], val[1])


def tree_get(store: NodeStore, root, key: bytes):
    """The stored value reference of ``key`` under ``root`` (None if absent)."""
    if not root:
        return None
    node, depth = store.resolve(root), 1
    while not node.leaf:
        depth += 1
        if depth > MAX_HEIGHT:
            raise _too_deep(store, root)
        node = store.resolve(node.vals[bisect.bisect_right(node.keys, key)])
    keys = node.keys
    i = bisect.bisect_left(keys, key)
    if i < len(keys) and keys[i] == key:
        return node.vals[i]
    return None


def tree_scan(store: NodeStore, root, start: bytes | None, end: bytes | None,
              reverse: bool = False) -> Iterator[tuple[bytes, object]]:
    """``(key, value reference)`` for ``start <= key < end`` in order, walking with an ancestor stack."""
    if not root:
        return
    stack: list = []
    node = store.resolve(root)
    while not node.leaf:  # descend to the first leaf that can hold an answer
        if reverse:
            i = len(node.keys) if end is None else bisect.bisect_left(node.keys, end)
        else:
            i = 0 if start is None else bisect.bisect_right(node.keys, start)
        stack.append([node, i])
        if len(stack) >= MAX_HEIGHT:
            raise _too_deep(store, root)
        node = store.resolve(node.vals[i])
    first, last = True, None
    while True:
        keys, vals = node.keys, node.vals
        # leaves must continue the order: else a page reached twice (a forged DAG) repeats keys
        if keys and last is not None and (keys[-1] >= last if reverse else keys[0] <= last):
            raise CorruptionError("a scan met keys out of order: the tree's pages are inconsistent",
                                  store.pf.path)
        if reverse:
            i = len(keys) - 1 if end is None or not first else bisect.bisect_left(keys, end) - 1
            for j in range(i, -1, -1):
                if start is not None and keys[j] < start:
                    return
                yield keys[j], vals[j]
        else:
            i = 0 if start is None or not first else bisect.bisect_left(keys, start)
            for j in range(i, len(keys)):
                if end is not None and keys[j] >= end:
                    return
                yield keys[j], vals[j]
        if keys:
            last = keys[0] if reverse else keys[-1]
        first = False
        while stack:  # climb to the nearest ancestor with another child on our side, then descend
            frame = stack[-1]
            frame[1] += -1 if reverse else 1
            if 0 <= frame[1] < len(frame[0].vals):
                break
            stack.pop()
        if not stack:
            return
        node = store.resolve(stack[-1][0].vals[stack[-1][1]])
        while not node.leaf:
            i = len(node.vals) - 1 if reverse else 0
            stack.append([node, i])
            if len(stack) >= MAX_HEIGHT:
                raise _too_deep(store, root)
            node = store.resolve(node.vals[i])


def _split(node: Node) -> tuple[Node, bytes, Node]:
    """Cut ``node`` at its byte midpoint; ``node`` keeps the left half."""
    half, acc, cut = node.nbytes // 2, _NODE_OVERHEAD, 1
    # a branch keeps at least one key on each side (entries are <= 1/4 page, so the cut lands mid-node)
    for cut in range(1, len(node.keys) - (0 if node.leaf else 1)):
        acc += _entry_bytes(node.leaf, node.keys[cut - 1], node.vals[cut - 1])
        if acc >= half:
            break
    if node.leaf:
        right = Node(True, node.keys[cut:], node.vals[cut:])
        sep = right.keys[0]
        del node.keys[cut:], node.vals[cut:]
    else:
        sep = node.keys[cut]
        right = Node(False, node.keys[cut + 1:], node.vals[cut + 1:])
        del node.keys[cut:], node.vals[cut + 1:]
    node.measure()
    right.measure()
    return node, sep, right


class TreeWriter:
    """Applies puts and deletes to a copy-on-write tree inside the page file's open transaction."""

    def __init__(self, store: NodeStore, root: int, height: int, n_keys: int, data_bytes: int,
                 inline_value_max: int):
        self.store, self.pf = store, store.pf
        self.root: Node | int | None = root or None  # a committed page, a copied (mutable) node, or empty
        self.height, self.n_keys, self.data_bytes = height, n_keys, data_bytes
        self.inline_value_max = inline_value_max
        self.capacity = self.pf.capacity
        self.min_bytes = self.capacity // 4

    def _mutable(self, ref) -> Node:
        if type(ref) is not int:
            return ref
        node = self.store.load(ref)
        copy = Node(node.leaf, list(node.keys), list(node.vals))
        copy.measure()
        self.pf.free(ref)
        return copy

    def _value_size(self, val) -> int:
        return len(val) if type(val) is bytes else val[1]

    def _drop_value(self, val) -> None:
        if type(val) is not bytes:
            self.pf.free_overflow(val[0])

    def _descend_mutable(self, key: bytes) -> tuple:
        """Copy-on-write the root-to-leaf path of ``key``; returns the leaf and ``[(parent, index)]``."""
        path: list[tuple[Node, int]] = []
        node = self.root = self._mutable(self.root)
        while not node.leaf:
            if len(path) >= MAX_HEIGHT:
                raise _too_deep(self.store, self.root)
            i = bisect.bisect_right(node.keys, key)
            child = node.vals[i] = self._mutable(node.vals[i])
            path.append((node, i))
            node = child
        return node, path

    def put(self, key: bytes, value: bytes) -> None:
        """Set ``key`` to ``value``."""
        val = value if len(value) <= self.inline_value_max else [self.pf.write_overflow(value), len(value)]
        if self.root is None:
            self.root = Node(True, [], [])
            self.root.measure()
            self.height = 1
        node, path = self._descend_mutable(key)
        keys = node.keys
        i = bisect.bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            old = node.vals[i]
            self._drop_value(old)
            self.data_bytes += len(value) - self._value_size(old)
            node.nbytes += _entry_bytes(True, key, val) - _entry_bytes(True, key, old)
            node.vals[i] = val
        else:
            keys.insert(i, key)
            node.vals.insert(i, val)
            node.nbytes += _entry_bytes(True, key, val)
            self.n_keys += 1
            self.data_bytes += len(key) + len(value)
        while node.nbytes > self.capacity:
            left, sep, right = _split(node)
            if not path:  # the root split: the tree grows one level
                self.root = Node(False, [sep], [left, right])
                self.root.measure()
                self.height += 1
                return
            parent, i = path.pop()
            parent.keys.insert(i, sep)
            parent.vals.insert(i + 1, right)
            parent.nbytes += _entry_bytes(False, sep, None)
            node = parent

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; True if it was present."""
        if tree_get(self.store, self.root, key) is None:
            return False
        node, path = self._descend_mutable(key)
        i = bisect.bisect_left(node.keys, key)
        old = node.vals[i]
        self._drop_value(old)
        del node.keys[i], node.vals[i]
        node.measure()
        self.n_keys -= 1
        self.data_bytes -= len(key) + self._value_size(old)
        self._rebalance(node, path)
        return True

    def _rebalance(self, node: Node, path: list) -> None:
        while path and node.nbytes < self.min_bytes:
            parent, i = path.pop()
            if len(parent.vals) > 1:
                li = i - 1 if i > 0 else i  # merge the pair (li, li + 1)
                left = parent.vals[li] = self._mutable(parent.vals[li])
                right = self._mutable(parent.vals[li + 1])
                if left.leaf:
                    left.keys += right.keys
                else:
                    left.keys += [parent.keys[li]] + right.keys
                left.vals += right.vals
                del parent.keys[li], parent.vals[li + 1]
                if left.measure() > self.capacity:  # too big for one page: split evenly (a borrow)
                    _, sep, right = _split(left)
                    parent.keys.insert(li, sep)
                    parent.vals.insert(li + 1, right)
                parent.measure()
            node = parent
        root = self.root
        while type(root) is Node and not root.leaf and len(root.vals) == 1:
            root = root.vals[0]  # root shrink: the tree loses one level
            self.height -= 1
        if type(root) is Node and root.leaf and not root.keys:
            root, self.height = None, 0
        self.root = root

    def delete_range(self, start: bytes, end: bytes) -> int:
        """Remove every key in ``[start, end)``; returns how many."""
        doomed = [k for k, _ in tree_scan(self.store, self.root, start, end)]
        for key in doomed:
            self.delete(key)
        return len(doomed)

    def commit(self):
        """Write the dirty nodes bottom-up; returns the new root page (0 for an empty tree)."""
        if self.root is None:
            return 0
        return self._spill(self.root)

    def _spill(self, ref) -> int:
        if type(ref) is int:
            return ref
        if not ref.leaf:
            vals = ref.vals
            for i, child in enumerate(vals):
                if type(child) is not int:
                    vals[i] = self._spill(child)
        invariant(len(ref.keys) > 0 or not ref.leaf or ref is self.root, "only the root leaf may be empty")
        return self.store.write(ref)


def build_tree(store: NodeStore, items, inline_value_max: int, fill_factor: float = 0.9):
    """Bulk-load ascending ``(key, value)`` pairs into fresh pages; returns ``(root, height, n_keys, data_bytes)``."""
    pf = store.pf
    limit = max(pf.capacity // 2, int(pf.capacity * fill_factor))
    level, n_keys, data_bytes = [], 0, 0
    node = Node(True, [], [], 16)
    for key, value in items:
        val = value if len(value) <= inline_value_max else [pf.write_overflow(value), len(value)]
        size = _entry_bytes(True, key, val)
        if node.keys and node.nbytes + size > limit:
            level.append((node.keys[0], store.write(node)))
            node = Node(True, [], [], 16)
        node.keys.append(key)
        node.vals.append(val)
        node.nbytes += size
        n_keys += 1
        data_bytes += len(key) + len(value)
    if not node.keys:
        return 0, 0, 0, 0
    level.append((node.keys[0], store.write(node)))
    height = 1
    while len(level) > 1:  # each upper level routes over the one below: separator = first key of the child
        groups: list[list[tuple[bytes, int]]] = [[]]
        size = _NODE_OVERHEAD
        for key, page in level:
            entry = _entry_bytes(False, key, None)
            if len(groups[-1]) > 1 and size + entry > limit:
                groups.append([])
                size = _NODE_OVERHEAD
            groups[-1].append((key, page))
            size += entry
        if len(groups) > 1 and len(groups[-1]) == 1:  # a branch needs two children: rebalance the tail
            tail = groups.pop(-2) + groups.pop()
            groups += [tail[:len(tail) // 2], tail[len(tail) // 2:]]
        upper = []
        for group in groups:
            node = Node(False, [k for k, _ in group[1:]], [p for _, p in group])
            upper.append((group[0][0], store.write(node)))
        level, height = upper, height + 1
    return level[0][1], height, n_keys, data_bytes


def check_tree(store: NodeStore, root: int) -> tuple[int, int]:
    """Verify sorted keys, separator bounds, equal leaf depth and page fit; returns ``(keys, height)``."""
    if not root:
        return 0, 0
    depths: set = set()
    count = 0

    def visit(ref, low, high, depth):
        nonlocal count
        if depth > MAX_HEIGHT:
            raise _too_deep(store, root)
        node = store.resolve(ref)
        keys = node.keys
        invariant(all(a < b for a, b in zip(keys, keys[1:])), "node keys must be strictly ascending")
        invariant(not keys or low is None or keys[0] >= low, "a key is below its separator")
        invariant(not keys or high is None or keys[-1] < high, "a key is not below its separator")
        invariant(Node(node.leaf, keys, node.vals).measure() <= store.pf.capacity, "a node overflows its page")
        if node.leaf:
            depths.add(depth)
            count += len(keys)
            return
        invariant(len(node.vals) == len(keys) + 1 and keys, "a branch needs keys and one more child")
        bounds = [low] + keys + [high]
        for i, child in enumerate(node.vals):
            visit(child, bounds[i], bounds[i + 1], depth + 1)

    visit(root, None, None, 1)
    invariant(len(depths) == 1, f"leaves at different depths: {sorted(depths)}")
    return count, depths.pop()


def tree_pages(store: NodeStore, root: int) -> list[int]:
    """Every page the committed tree at ``root`` uses: nodes and overflow chains."""
    pages: list[int] = []
    stack = [(root, 1)] if root else []
    while stack:
        page, depth = stack.pop()
        if depth > MAX_HEIGHT:
            raise _too_deep(store, root)
        pages.append(page)
        node = store.load(page)
        if not node.leaf:
            stack.extend((child, depth + 1) for child in node.vals)
            continue
        for val in node.vals:
            if type(val) is not bytes:
                pages.extend(store.pf.overflow_pages(val[0]))
    return pages
