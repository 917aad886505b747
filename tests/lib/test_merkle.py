# lib/merkle.py: RFC 6962 tree hashes, audit paths and their verification,
# against the published CT test data and a straightforward recursive
# reference written from RFC 6962 section 2.1 / RFC 9162 section 2.1.
import hashlib

from fuzzing import Xorshift32, iterations
from mpcompat import raises

import merkle
from merkle import MerkleError

# The Certificate Transparency reference test data: leaf inputs, the node
# hashes of every complete subtree and the roots of trees of 0..8 leaves
# (transparency-dev/merkle testonly/constants.go, from the CT C++
# reference's merkletree/merkle_tree_test.cc).
CT_INPUTS = ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
             "606162636465666768696a6b6c6d6e6f")
CT_ROOTS = (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)
# node hashes by level (0: leaves), then position in the level
CT_NODES = (
    ("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
     "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
     "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
     "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
     "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
     "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
     "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
     "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
    ("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
     "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
     "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
     "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
    ("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
     "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
)


def _node(level, pos):
    return bytes.fromhex(CT_NODES[level][pos])


def _ct_leaves():
    return [merkle.leaf_hash(bytes.fromhex(x)) for x in CT_INPUTS]


# -- the reference: RFC 6962 section 2.1 as written, recursive ---------------


def _ref_split(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class RefTree:
    # MTH and PATH by the RFC's recursion over the leaf hashes, with the
    # subtree hashes memoised so every index of a 300-leaf tree stays quick.
    def __init__(self, leaves):
        self.leaves = leaves
        self.memo = {}

    def mth(self, lo, hi):
        if hi - lo == 0:
            return hashlib.sha256(b"").digest()
        if hi - lo == 1:
            return self.leaves[lo]
        key = (lo, hi)
        h = self.memo.get(key)
        if h is None:
            k = _ref_split(hi - lo)
            h = hashlib.sha256(b"\x01" + self.mth(lo, lo + k) + self.mth(lo + k, hi)).digest()
            self.memo[key] = h
        return h

    def path(self, m, lo, hi):
        n = hi - lo
        if n == 1:
            return []
        k = _ref_split(n)
        if m < k:
            return self.path(m, lo, lo + k) + [self.mth(lo + k, hi)]
        return self.path(m - k, lo + k, hi) + [self.mth(lo, lo + k)]


def _leaves(n, salt=b""):
    return [merkle.leaf_hash(salt + i.to_bytes(2, "big")) for i in range(n)]


def _check_size(n, salt=b""):
    leaves = _leaves(n, salt)
    ref = RefTree(leaves)
    want = ref.mth(0, n)
    got = merkle.root(leaves)
    assert got == want, n
    for i in range(n):
        path = merkle.audit_path(leaves, i)
        assert path == ref.path(i, 0, n), (n, i)
        assert len(path) == merkle.path_length(i, n), (n, i)
        assert merkle.verify(leaves[i], i, n, path, want), (n, i)
        if path:
            # a leaf that is not there, or another index, does not verify
            assert not merkle.verify(leaves[(i + 1) % n], i, n, path, want), (n, i)


# -- tests --------------------------------------------------------------------


def test_leaf_and_node_hashes_are_domain_separated():
    # SHA-256(0x00) and SHA-256(0x01 || a || b), as RFC 6962 section 2.1 says
    assert merkle.leaf_hash(b"") == bytes.fromhex(CT_ROOTS[1])
    a, b = _node(0, 0), _node(0, 1)
    assert merkle.node_hash(a, b) == bytes.fromhex(CT_NODES[1][0])
    assert merkle.leaf_hash(a + b) != merkle.node_hash(a, b)
    assert merkle.leaf_hash(bytearray(b"\x00")) == _node(0, 1)


def test_roots_of_the_ct_reference_data():
    leaves = _ct_leaves()
    for level in range(len(CT_NODES[0])):
        assert leaves[level] == _node(0, level), level
    for n in range(9):
        assert merkle.root(leaves[:n]) == bytes.fromhex(CT_ROOTS[n]), n
    assert merkle.root([]) == merkle.EMPTY_ROOT == hashlib.sha256(b"").digest()


def test_audit_paths_of_the_ct_reference_data():
    leaves = _ct_leaves()
    # leaf 0 of 8: its sibling leaf, then the subtrees [2, 4) and [4, 8)
    assert merkle.audit_path(leaves, 0) == [_node(0, 1), _node(1, 1), _node(2, 1)]
    # leaf 6 of 8: leaf 7, [4, 6), [0, 4)
    assert merkle.audit_path(leaves, 6) == [_node(0, 7), _node(1, 2), _node(2, 0)]
    # leaf 6 of 7 has no sibling at the bottom: [4, 6), then [0, 4)
    assert merkle.audit_path(leaves[:7], 6) == [_node(1, 2), _node(2, 0)]
    # leaf 4 of 5: only [0, 4)
    assert merkle.audit_path(leaves[:5], 4) == [_node(2, 0)]
    assert merkle.audit_path(leaves[:1], 0) == []
    for n in range(1, 9):
        r = bytes.fromhex(CT_ROOTS[n])
        for i in range(n):
            assert merkle.verify(leaves[i], i, n, merkle.audit_path(leaves[:n], i), r), (n, i)


def test_every_index_of_small_and_edge_sizes_matches_the_reference():
    # every size to 17, and each side of the powers of two to 257
    sizes = list(range(1, 18)) + [31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 300]
    for n in sizes:
        _check_size(n)


def test_every_index_of_random_sizes_matches_the_reference():
    rng = Xorshift32(6962)
    for k in range(iterations(6)):
        _check_size(1 + rng.below(300), k.to_bytes(2, "big"))


def test_streaming_root_matches_at_every_size():
    leaves = _leaves(300)
    ref = RefTree(leaves)
    acc = merkle.Accumulator()
    assert acc.root() == merkle.EMPTY_ROOT and acc.size == 0
    for n in range(1, 301):
        acc.add(leaves[n - 1])
        assert acc.size == n
        assert acc.root() == ref.mth(0, n), n
        # the stack holds one subtree per set bit of the size
        assert len(acc._stack) == bin(n).count("1"), n
    # root() of a slice and of any iterable
    assert merkle.root(leaves, 100, 228) == ref.mth(100, 228)
    assert merkle.root(iter(leaves[:77])) == ref.mth(0, 77)
    assert merkle.root(tuple(leaves[:5])) == ref.mth(0, 5)
    assert merkle.root(leaves, 290) == ref.mth(290, 300)


def test_a_wrong_path_hash_or_root_does_not_verify():
    leaves = _leaves(21)
    r = merkle.root(leaves)
    for i in (0, 7, 16, 20):
        path = merkle.audit_path(leaves, i)
        assert merkle.verify(leaves[i], i, 21, path, r)
        for j in range(len(path)):
            bad = list(path)
            bad[j] = bytes(32)
            assert not merkle.verify(leaves[i], i, 21, bad, r), (i, j)
        # the same path at its neighbour's index, or against another root
        if i ^ 1 < 21:
            assert not merkle.verify(leaves[i], i ^ 1, 21, path, r), i
        assert not merkle.verify(leaves[i], i, 21, path, bytes(32))
    assert merkle.root_from_path(leaves[3], 3, 21, merkle.audit_path(leaves, 3)) == r


def test_the_tree_size_binds_the_shape():
    # An inner node passed off as a leaf of a smaller tree gives the same
    # root; what stops it is the size (signed in the BLOCK) and the leaf
    # hash being computed by the verifier from its own entry bytes.
    leaves = _leaves(4)
    r = merkle.root(leaves)
    n01 = merkle.node_hash(leaves[0], leaves[1])
    n23 = merkle.node_hash(leaves[2], leaves[3])
    assert merkle.verify(n01, 0, 2, [n23], r)
    assert raises(MerkleError, merkle.verify, n01, 0, 4, [n23], r).reason == "path"
    assert not merkle.verify(n01, 0, 4, [n23, n23], r)


def test_paths_of_the_wrong_length_are_refused():
    leaves = _leaves(12)
    r = merkle.root(leaves)
    path = merkle.audit_path(leaves, 5)
    assert len(path) == 4
    exc = raises(MerkleError, merkle.verify, leaves[5], 5, 12, path[:-1], r)
    assert exc.reason == "path", exc
    exc = raises(MerkleError, merkle.verify, leaves[5], 5, 12, path + [bytes(32)], r)
    assert exc.reason == "path", exc
    # leaf 8 of 12 sits in the right subtree [8, 12): 3 hashes, not 4
    assert merkle.path_length(8, 12) == 3
    exc = raises(MerkleError, merkle.verify, leaves[8], 8, 12, merkle.audit_path(leaves, 5), r)
    assert exc.reason == "path", exc
    exc = raises(MerkleError, merkle.verify, leaves[0], 0, 1, [bytes(32)], leaves[0])
    assert exc.reason == "path", exc
    assert merkle.verify(leaves[0], 0, 1, [], leaves[0])
    exc = raises(MerkleError, merkle.verify, leaves[0], 0, 2, [bytes(32)] * 33, r)
    assert exc.reason == "path", exc


def test_malformed_arguments_are_refused_with_a_reason():
    leaves = _leaves(4)
    r = merkle.root(leaves)
    path = merkle.audit_path(leaves, 1)
    cases = (
        ((leaves[1][:31], 1, 4, path, r), "hash"),
        ((leaves[1], 1, 4, path, r[:31]), "hash"),
        ((leaves[1], 1, 4, [path[0], b"x"], r), "hash"),
        ((leaves[1], 1, 4, [path[0], None], r), "hash"),
        (("x" * 32, 1, 4, path, r), "hash"),
        ((leaves[1], 4, 4, path, r), "index"),
        ((leaves[1], -1, 4, path, r), "index"),
        ((leaves[1], True, 4, path, r), "index"),
        ((leaves[1], 1, 0, path, r), "size"),
        ((leaves[1], 1, 1 << 32, path, r), "size"),
        ((leaves[1], 1, "4", path, r), "size"),
        ((leaves[1], 1, 4, b"".join(path), r), "path"),
        ((leaves[1], 1, 4, None, r), "path"),
    )
    for args, reason in cases:
        exc = raises(MerkleError, merkle.verify, *args)
        assert exc.reason == reason, (reason, exc)
        assert isinstance(exc, ValueError)
    assert raises(MerkleError, merkle.audit_path, [], 0).reason == "size"
    assert raises(MerkleError, merkle.audit_path, leaves, 4).reason == "index"
    assert raises(MerkleError, merkle.audit_path, leaves[:3] + [b"short"], 0).reason == "hash"
    assert raises(MerkleError, merkle.root, [leaves[0], 7]).reason == "hash"
    assert raises(MerkleError, merkle.Accumulator().add, b"").reason == "hash"


def test_the_largest_tree_has_32_level_paths():
    # a tree of 2^32 - 1 leaves: its last leaf has a 31-hash path, others 32
    size = merkle.MAX_SIZE
    assert merkle.path_length(0, size) == 32
    assert merkle.path_length(size - 1, size) == 31
    # a verifier handles the sizes without building anything
    leaf = merkle.leaf_hash(b"x")
    path = [bytes(32)] * 32
    assert merkle.verify(leaf, 0, size, path, bytes(32)) is False
    assert merkle.root_from_path(leaf, 5, size, path) == merkle.root_from_path(leaf, 5, size, path)
