# Merkle tree hashes of RFC 6962 (Certificate Transparency), section 2.1,
# as RFC 9162 section 2.1 restates them, with SHA-256:
#
#     leaf  = H(0x00 || entry)
#     node  = H(0x01 || left || right)
#     MTH(D[n]) for n > 1: k = the largest power of two below n,
#         H(0x01 || MTH(D[0:k]) || MTH(D[k:n]))
#     MTH of no entries = H() (the hash of the empty string)
#
# The 0x00/0x01 prefixes keep a leaf from passing for a node. An entry of the
# trade ledger is the exact bytes of a signed COSE_Sign1 message (READING or
# ORDER) as the hub accepted it; docs/trading.md has the rest.
#
# Nothing recurses: a root is folded from a stack of at most 33 subtree
# hashes (sizes up to 2^32), and an audit path is found top-down, so memory
# stays bounded by the path whatever the tree's size.
from compat import const
import hashlib

_HASH_LEN = const(32)
MAX_SIZE = 0xFFFFFFFF  # a BLOCK's entries field is a uint32
_MAX_PATH = const(32)  # the longest audit path of a tree of MAX_SIZE leaves

_LEAF = const(b"\x00")
_NODE = const(b"\x01")


class MerkleError(ValueError):
    # reason: "hash" (not 32 bytes), "index", "size", "path"
    def __init__(self, reason, detail=""):
        super().__init__("%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason


def leaf_hash(data):
    h = hashlib.sha256(_LEAF)
    h.update(data)
    return h.digest()


def node_hash(left, right):
    h = hashlib.sha256(_NODE)
    h.update(left)
    h.update(right)
    return h.digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()


def _check_hash(h, what):
    if not isinstance(h, (bytes, bytearray)) or len(h) != _HASH_LEN:
        raise MerkleError("hash", "%s must be %d bytes" % (what, _HASH_LEN))


def _check_int(v, what, lo, hi, reason):
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise MerkleError(reason, "%s must be an int in %d..%d, got %r" % (what, lo, hi, v))


class Accumulator:
    # The root of a tree that grows one leaf hash at a time, for a hub that
    # streams entries into a block. It keeps the hashes of the perfect
    # subtrees the size decomposes into (one per set bit of size), largest
    # first; closing them right to left gives RFC 6962's shape.
    def __init__(self):
        self.size = 0
        self._stack = []

    def add(self, leaf):
        _check_hash(leaf, "leaf hash")
        if self.size >= MAX_SIZE:
            raise MerkleError("size", "a tree holds at most %d leaves" % MAX_SIZE)
        stack = self._stack
        h = bytes(leaf)
        n = self.size
        # each trailing 1 bit of the old size is a subtree of the new one's size
        while n & 1:
            h = node_hash(stack.pop(), h)
            n >>= 1
        stack.append(h)
        self.size += 1

    def root(self):
        stack = self._stack
        if not stack:
            return EMPTY_ROOT
        h = stack[-1]
        for i in range(len(stack) - 2, -1, -1):
            h = node_hash(stack[i], h)
        return h


def root(leaf_hashes, start=0, end=None):
    """MTH of leaf_hashes[start:end] (any iterable when start is 0 and end None)."""
    acc = Accumulator()
    if start == 0 and end is None:
        for leaf in leaf_hashes:
            acc.add(leaf)
    else:
        for i in range(start, len(leaf_hashes) if end is None else end):
            acc.add(leaf_hashes[i])
    return acc.root()


def _split(n):
    # the largest power of two below n (n >= 2)
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def audit_path(leaf_hashes, index):
    """PATH(index, D[n]) of RFC 6962 section 2.1.1, leaf side first, for the
    indexable sequence of leaf hashes (len n)."""
    n = len(leaf_hashes)
    _check_int(n, "tree size", 1, MAX_SIZE, "size")
    _check_int(index, "index", 0, n - 1, "index")
    siblings = []  # from the root down
    lo, hi = 0, n
    while hi - lo > 1:
        k = _split(hi - lo)
        mid = lo + k
        if index < mid:
            siblings.append(root(leaf_hashes, mid, hi))
            hi = mid
        else:
            siblings.append(root(leaf_hashes, lo, mid))
            lo = mid
    siblings.reverse()
    return siblings


def path_length(index, size):
    """How many hashes the audit path of leaf `index` in a tree of `size` has."""
    _check_int(size, "tree size", 1, MAX_SIZE, "size")
    _check_int(index, "index", 0, size - 1, "index")
    n = 0
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            hi = mid
        else:
            lo = mid
        n += 1
    return n


def root_from_path(leaf, index, size, path):
    """The root that `path` leads to from `leaf` at `index` in a tree of
    `size` leaves (RFC 9162 section 2.1.3.2). MerkleError when the inputs
    are malformed, including a path of the wrong length for index and size."""
    _check_hash(leaf, "leaf hash")
    _check_int(size, "tree size", 1, MAX_SIZE, "size")
    _check_int(index, "index", 0, size - 1, "index")
    if not isinstance(path, (list, tuple)) or len(path) > _MAX_PATH:
        raise MerkleError("path", "a list of at most %d hashes" % _MAX_PATH)
    fn = index
    sn = size - 1
    r = bytes(leaf)
    for p in path:
        _check_hash(p, "path hash")
        if sn == 0:
            raise MerkleError("path", "%d hashes, leaf %d of %d needs %d" % (
                len(path), index, size, path_length(index, size)))
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # a right edge: climb past the levels where this node had no sibling
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleError("path", "%d hashes, leaf %d of %d needs %d" % (
            len(path), index, size, path_length(index, size)))
    return r


def verify(leaf, index, size, path, expected_root):
    """True if `path` proves `leaf` is entry `index` of the tree of `size`
    leaves whose root is `expected_root`, False if it leads elsewhere;
    MerkleError when the inputs are malformed."""
    _check_hash(expected_root, "root")
    return root_from_path(leaf, index, size, path) == bytes(expected_root)
