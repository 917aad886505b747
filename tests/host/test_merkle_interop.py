"""Cross-checks of lib/merkle.py and lib/trade/witness.py on CPython: audit
paths of larger trees than the MicroPython tests build, against the
recursive RFC 6962 reference of tests/lib/test_merkle.py; witness requests
encoded by cbor2, as a CPython hub may write them; and hypothesis fuzzing of
the request decoder with structures cbor2 encodes (WitnessError only).
"""

import hashlib
import os
import sys

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for sub in ("tests/lib", "lib"):
    path = os.path.join(ROOT, sub)
    if path not in sys.path:
        sys.path.insert(0, path)

import merkle  # noqa: E402
from protocol_vectors import DEVICE_D, HUB_D, Signer  # noqa: E402
from test_merkle import RefTree  # noqa: E402
from trade import messages as m  # noqa: E402
from trade import witness  # noqa: E402
from trade.witness import Witness, WitnessError  # noqa: E402

CHECKS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEV = Signer(DEVICE_D)
HUB = Signer(HUB_D)
NOW = 1750503600


def _leaves(n, salt):
    return [merkle.leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


@CHECKS
@given(st.integers(1, 5000), st.data())
def test_paths_of_large_trees_match_the_reference(n, data):
    leaves = _leaves(n, b"h")
    ref = RefTree(leaves)
    r = merkle.root(leaves)
    assert r == ref.mth(0, n)
    for _ in range(3):
        i = data.draw(st.integers(0, n - 1))
        path = merkle.audit_path(leaves, i)
        assert path == ref.path(i, 0, n)
        assert merkle.verify(leaves[i], i, n, path, r)
        j = data.draw(st.integers(0, n - 1))
        if j != i and merkle.path_length(j, n) == len(path):
            assert not merkle.verify(leaves[i], j, n, path, r)


def _member_and_block(count=4):
    w = Witness(DEV.kid, {HUB.kid: HUB.pub}.get)
    entries = []
    mine = []
    for seq in range(1, count + 1):
        f = {"interval_min": 15, "import_wh": seq, "export_wh": 0, "import_register_wh": seq,
             "export_register_wh": 0, "power_w": 0, "meter": b"m"}
        signed = m.sign(m.READING, seq, NOW - 900, f, DEV.kid, DEV)
        w.remember(seq, signed)
        entries += [b"someone else %d" % seq, signed]
        mine.append((seq, len(entries) - 1))
    leaves = [merkle.leaf_hash(e) for e in entries]
    header = {"height": 3, "prev": bytes(32), "root": merkle.root(leaves), "entries": len(entries)}
    block = m.sign(m.BLOCK, 9, NOW, header, HUB.kid, HUB)
    proofs = [[seq, i, merkle.audit_path(leaves, i)] for seq, i in mine]
    return w, block, proofs


def test_a_request_encoded_by_cbor2_is_witnessed():
    w, block, proofs = _member_and_block()
    data = cbor2.dumps([block, proofs])
    assert data == witness.encode_request(block, proofs)
    got = w.check(data, NOW)
    assert got.proven == [1, 2, 3, 4]
    assert got.fields == {"height": 3, "block": hashlib.sha256(block).digest()}
    # cbor2 reads what we write the same way
    assert cbor2.loads(witness.encode_request(block, proofs)) == [block, proofs]


anything = st.recursive(
    st.one_of(st.integers(-(2**64), 2**64 - 1), st.binary(max_size=40), st.text(max_size=8),
              st.booleans(), st.none(), st.sampled_from([bytes(32), 0, 1, 2**32])),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.integers(0, 9), inner, max_size=3)),
    max_leaves=30,
)


@CHECKS
@given(anything, st.data())
def test_hostile_structures_give_witness_errors_only(junk, data):
    w, block, proofs = _member_and_block(2)
    shape = data.draw(st.sampled_from(["top", "block", "proofs", "proof", "path"]))
    if shape == "top":
        req = junk
    elif shape == "block":
        req = [junk, proofs]
    elif shape == "proofs":
        req = [block, junk]
    elif shape == "proof":
        req = [block, [proofs[0], junk]]
    else:
        req = [block, [[1, proofs[0][1], junk]]]
    try:
        got = w.check(cbor2.dumps(req), NOW)
    except WitnessError as e:
        assert e.reason in {"size", "malformed", "signature", "unknown_entry", "duplicate", "proof"}, e
    else:
        # only a request that still proves what we signed gets through
        assert got.fields["height"] == 3


@CHECKS
@given(st.binary(max_size=300), st.integers(0, 300))
def test_random_bytes_spliced_into_a_request_give_witness_errors_only(noise, at):
    w, block, proofs = _member_and_block(2)
    req = witness.encode_request(block, proofs)
    at = min(at, len(req))
    data = req[:at] + noise + req[at + len(noise) // 2:]
    try:
        w.check(data, NOW)
    except WitnessError:
        pass
