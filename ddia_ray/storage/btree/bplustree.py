"""An in-memory B+tree ordered map (the textbook structure, DDIA ch. 3 "B-Trees").

Theory of operation
-------------------
Every key/value pair lives in a *leaf*; *inner* nodes hold only separator
keys that route a search: in an inner node, ``children[i]`` holds keys
``< keys[i]`` and ``children[i + 1]`` keys ``>= keys[i]``. ``order`` is the
fanout: a node holds at most ``order - 1`` keys (an inner node at most
``order`` children) and, unless it is the root, at least
``(order - 1) // 2`` keys. Leaves are doubly linked so range scans walk
sideways in either direction without going back up the tree.

* insert: descend, insert into the leaf; an overfull node splits in two and
  pushes a separator into its parent, which may split in turn (the tree
  grows at the root, so every leaf stays at the same depth).
* delete: remove from the leaf; an underfull node first borrows one entry
  from a sibling that can spare one, otherwise merges with a sibling and
  removes the separator from the parent, which may underflow in turn; an
  inner root left with one child is replaced by it (root shrink).
* bulk load: sorted items fill leaves to ``fill_factor`` of capacity, then
  each upper level is built over the one below, bottom-up (no splits).

This is the pure, synchronous reference structure; the on-disk,
copy-on-write engine in :mod:`ddia_ray.storage.btree.cowtree` follows the
same rules but sizes nodes by bytes instead of by count.
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Iterable, Iterator

from ..._validate import at_least, integer, invariant, probability
from ...errors import ConfigError

__all__ = ["BPlusTree"]


class _Leaf:
    __slots__ = ("keys", "values", "next", "prev")

    def __init__(self, keys: list | None = None, values: list | None = None) -> None:
        self.keys: list = keys if keys is not None else []
        self.values: list = values if values is not None else []
        self.next: _Leaf | None = None
        self.prev: _Leaf | None = None


class _Inner:
    __slots__ = ("keys", "children")

    def __init__(self, keys: list, children: list) -> None:
        self.keys: list = keys
        self.children: list = children


def _group_sizes(n: int, per: int, low: int) -> list[int]:
    """Split ``n`` items into groups of about ``per`` (never below ``low`` when there are several)."""
    k = max(1, math.ceil(n / per))
    if low > 0:
        k = max(1, min(k, n // low))
    base, extra = divmod(n, k)
    return [base + (1 if i < extra else 0) for i in range(k)]


class BPlusTree:
    """Ordered map with ``O(log n)`` get/insert/delete and sorted range scans in both directions."""

    def __init__(self, order: int = 32):
        self.order = at_least("order", integer("order", order), 3)
        self.max_keys = order - 1
        self.min_keys = (order - 1) // 2
        self._root: Any = _Leaf()
        self._len = 0

    # --- reads --------------------------------------------------------------

    def __len__(self) -> int:
        return self._len

    def __contains__(self, key) -> bool:
        leaf = self._leaf_for(key)
        i = bisect.bisect_left(leaf.keys, key)
        return i < len(leaf.keys) and leaf.keys[i] == key

    def _leaf_for(self, key, path: list | None = None) -> _Leaf:
        node = self._root
        while isinstance(node, _Inner):
            i = bisect.bisect_right(node.keys, key)
            if path is not None:
                path.append((node, i))
            node = node.children[i]
        return node

    def get(self, key, default=None):
        """The value stored under ``key``, or ``default``."""
        leaf = self._leaf_for(key)
        i = bisect.bisect_left(leaf.keys, key)
        if i < len(leaf.keys) and leaf.keys[i] == key:
            return leaf.values[i]
        return default

    def _first_leaf(self) -> _Leaf:
        node = self._root
        while isinstance(node, _Inner):
            node = node.children[0]
        return node

    def _last_leaf(self) -> _Leaf:
        node = self._root
        while isinstance(node, _Inner):
            node = node.children[-1]
        return node

    def scan(self, start=None, end=None, *, reverse: bool = False) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` pairs with ``start <= key < end`` (None: unbounded), ascending or descending."""
        if start is not None and end is not None and start > end:
            raise ConfigError(f"range start {start!r} is after its end {end!r}")
        return self._scan_reverse(start, end) if reverse else self._scan_forward(start, end)

    def _scan_forward(self, start, end):
        leaf = self._first_leaf() if start is None else self._leaf_for(start)
        i = 0 if start is None else bisect.bisect_left(leaf.keys, start)
        while leaf is not None:
            keys, values = leaf.keys, leaf.values
            while i < len(keys):
                if end is not None and keys[i] >= end:
                    return
                yield keys[i], values[i]
                i += 1
            leaf, i = leaf.next, 0

    def _scan_reverse(self, start, end):
        leaf = self._last_leaf() if end is None else self._leaf_for(end)
        i = len(leaf.keys) - 1 if end is None else bisect.bisect_left(leaf.keys, end) - 1
        while leaf is not None:
            keys, values = leaf.keys, leaf.values
            while i >= 0:
                if start is not None and keys[i] < start:
                    return
                yield keys[i], values[i]
                i -= 1
            leaf = leaf.prev
            i = len(leaf.keys) - 1 if leaf is not None else -1

    def items(self) -> list[tuple[Any, Any]]:
        """Every pair in key order."""
        return list(self._scan_forward(None, None))

    # --- insert -------------------------------------------------------------

    def insert(self, key, value) -> None:
        """Set ``key`` to ``value`` (replacing an existing value)."""
        path: list = []
        leaf = self._leaf_for(key, path)
        i = bisect.bisect_left(leaf.keys, key)
        if i < len(leaf.keys) and leaf.keys[i] == key:
            leaf.values[i] = value
            return
        leaf.keys.insert(i, key)
        leaf.values.insert(i, value)
        self._len += 1
        if len(leaf.keys) > self.max_keys:
            self._split(leaf, path)

    __setitem__ = insert

    def _split(self, node, path: list) -> None:
        while len(node.keys) > self.max_keys:
            mid = len(node.keys) // 2
            right: _Leaf | _Inner
            if isinstance(node, _Leaf):
                right = _Leaf(node.keys[mid:], node.values[mid:])
                del node.keys[mid:], node.values[mid:]
                right.next, right.prev = node.next, node
                if node.next is not None:
                    node.next.prev = right
                node.next = right
                sep = right.keys[0]
            else:
                sep = node.keys[mid]
                right = _Inner(node.keys[mid + 1:], node.children[mid + 1:])
                del node.keys[mid:], node.children[mid + 1:]
            if not path:  # the root split: the tree grows one level
                self._root = _Inner([sep], [node, right])
                return
            parent, idx = path.pop()
            parent.keys.insert(idx, sep)
            parent.children.insert(idx + 1, right)
            node = parent

    # --- delete -------------------------------------------------------------

    def delete(self, key) -> bool:
        """Remove ``key``; True if it was present."""
        path: list = []
        leaf = self._leaf_for(key, path)
        i = bisect.bisect_left(leaf.keys, key)
        if i == len(leaf.keys) or leaf.keys[i] != key:
            return False
        del leaf.keys[i], leaf.values[i]
        self._len -= 1
        self._rebalance(leaf, path)
        return True

    def __delitem__(self, key) -> None:
        if not self.delete(key):
            raise KeyError(key)

    def _rebalance(self, node, path: list) -> None:
        while path and len(node.keys) < self.min_keys:
            parent, idx = path.pop()
            left = parent.children[idx - 1] if idx > 0 else None
            right = parent.children[idx + 1] if idx + 1 < len(parent.children) else None
            if left is not None and len(left.keys) > self.min_keys:
                self._borrow_from_left(node, left, parent, idx)
                return
            if right is not None and len(right.keys) > self.min_keys:
                self._borrow_from_right(node, right, parent, idx)
                return
            if left is not None:
                self._merge(left, node, parent, idx - 1)
            else:
                self._merge(node, right, parent, idx)
            node = parent
        while isinstance(self._root, _Inner) and not self._root.keys:
            self._root = self._root.children[0]  # root shrink: the tree loses one level

    def _borrow_from_left(self, node, left, parent, idx) -> None:
        if isinstance(node, _Leaf):
            node.keys.insert(0, left.keys.pop())
            node.values.insert(0, left.values.pop())
            parent.keys[idx - 1] = node.keys[0]
        else:  # rotate through the parent separator
            node.keys.insert(0, parent.keys[idx - 1])
            parent.keys[idx - 1] = left.keys.pop()
            node.children.insert(0, left.children.pop())

    def _borrow_from_right(self, node, right, parent, idx) -> None:
        if isinstance(node, _Leaf):
            node.keys.append(right.keys.pop(0))
            node.values.append(right.values.pop(0))
            parent.keys[idx] = right.keys[0]
        else:
            node.keys.append(parent.keys[idx])
            parent.keys[idx] = right.keys.pop(0)
            node.children.append(right.children.pop(0))

    def _merge(self, left, right, parent, sep_idx) -> None:
        """Fold ``right`` into ``left``; they are ``parent.children[sep_idx]`` and ``[sep_idx + 1]``."""
        if isinstance(left, _Leaf):
            left.keys += right.keys
            left.values += right.values
            left.next = right.next
            if right.next is not None:
                right.next.prev = left
        else:
            left.keys += [parent.keys[sep_idx]] + right.keys
            left.children += right.children
        del parent.keys[sep_idx]
        del parent.children[sep_idx + 1]

    # --- bulk load ----------------------------------------------------------

    @classmethod
    def bulk_load(cls, items: Iterable[tuple[Any, Any]], order: int = 32, fill_factor: float = 0.9) -> "BPlusTree":
        """Build a tree from strictly ascending ``(key, value)`` pairs without any split."""
        tree = cls(order)
        fill = probability("fill_factor", fill_factor)
        if fill < 0.5:
            raise ConfigError(f"fill_factor must be >= 0.5, got {fill_factor!r}")
        pairs = list(items)
        for (a, _), (b, _) in zip(pairs, pairs[1:]):
            if not a < b:
                raise ConfigError(f"bulk_load needs strictly ascending keys; {a!r} is followed by {b!r}")
        if not pairs:
            return tree
        per_leaf = max(tree.min_keys, 1, min(tree.max_keys, round(fill * tree.max_keys)))
        level: list = []
        firsts: list = []
        pos = 0
        for size in _group_sizes(len(pairs), per_leaf, tree.min_keys):
            chunk = pairs[pos:pos + size]
            pos += size
            leaf = _Leaf([k for k, _ in chunk], [v for _, v in chunk])
            if level:
                level[-1].next, leaf.prev = leaf, level[-1]
            level.append(leaf)
            firsts.append(chunk[0][0])
        per_inner = max(tree.min_keys + 1, 2, min(order, round(fill * order)))
        while len(level) > 1:
            upper, upper_firsts, pos = [], [], 0
            for size in _group_sizes(len(level), per_inner, tree.min_keys + 1):
                upper.append(_Inner(firsts[pos + 1:pos + size], level[pos:pos + size]))
                upper_firsts.append(firsts[pos])
                pos += size
            level, firsts = upper, upper_firsts
        tree._root = level[0]
        tree._len = len(pairs)
        return tree

    # --- invariants ---------------------------------------------------------

    def height(self) -> int:
        """Levels from the root to the leaves (1 for a lone leaf)."""
        h, node = 1, self._root
        while isinstance(node, _Inner):
            h, node = h + 1, node.children[0]
        return h

    def check_invariants(self) -> None:
        """Sorted keys, fill bounds, equal leaf depth, separators bounding their subtrees, leaf links, count."""
        leaves: list = []
        self._check(self._root, None, None, 1, self.height(), leaves, is_root=True)
        for a, b in zip(leaves, leaves[1:]):
            invariant(a.next is b and b.prev is a, "leaf sibling links must follow key order")
        invariant(leaves[0].prev is None and leaves[-1].next is None, "the leaf chain must be open at both ends")
        invariant(sum(len(leaf.keys) for leaf in leaves) == self._len, "len() must count the keys in the leaves")

    def _check(self, node, low, high, depth, height, leaves, is_root) -> None:
        keys = node.keys
        invariant(all(a < b for a, b in zip(keys, keys[1:])), "keys within a node must be strictly ascending")
        invariant(len(keys) <= self.max_keys, f"a node holds {len(keys)} keys, more than {self.max_keys}")
        if not is_root:
            invariant(len(keys) >= self.min_keys, f"a non-root node holds {len(keys)} keys, fewer than {self.min_keys}")
        if keys:
            invariant(low is None or keys[0] >= low, "a key is below its separator's lower bound")
            invariant(high is None or keys[-1] < high, "a key is not below its separator's upper bound")
        if isinstance(node, _Leaf):
            invariant(len(node.values) == len(keys), "a leaf needs one value per key")
            invariant(depth == height, "every leaf must be at the same depth")
            leaves.append(node)
            return
        invariant(len(node.children) == len(keys) + 1, "an inner node needs one more child than keys")
        invariant(not is_root or len(keys) >= 1, "an inner root needs at least two children")
        bounds = [low] + keys + [high]
        for i, child in enumerate(node.children):
            self._check(child, bounds[i], bounds[i + 1], depth + 1, height, leaves, is_root=False)
