"""host_tools/hub/ledger.py: the hub's witnessed ledger. Its Merkle hashes
are compared with lib/merkle.py and the RFC recursion of
tests/lib/test_merkle.py; its witness requests are fed to the gateway's
own checker, lib/trade/witness.py, under CPython; the chain audit must find
any changed byte."""

import hashlib
import random
import sys
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "lib"), str(ROOT / "tests" / "lib")]

import merkle  # noqa: E402
from protocol_vectors import Signer  # noqa: E402
from test_merkle import CT_INPUTS, CT_ROOTS, RefTree  # noqa: E402
from trade import messages as m  # noqa: E402
from trade.witness import Witness, encode_request  # noqa: E402

from host_tools.hub import ledger  # noqa: E402
from host_tools.hub.cose_es256 import HubKey, verify1  # noqa: E402
from host_tools.hub.ledger import Finality, LedgerError, build_block, committee, verify_chain  # noqa: E402

NOW = 1750503600
START = NOW - NOW % 900
HUB = HubKey(ec.derive_private_key(0x4855422D6B6579, ec.SECP256R1()))
HUB_XY = (HUB.public_key.public_numbers().x, HUB.public_key.public_numbers().y)
FEW = settings(max_examples=60, deadline=None)


def key(d):
    # a household's key on the host: cryptography signs as fast as the hub does
    return HubKey(ec.derive_private_key(d, ec.SECP256R1()))


HOUSES = [key(0x1000 + i) for i in range(6)]


def reading(k, seq, wh=100):
    return k.sign1(cbor2.dumps([1, m.READING, seq, NOW - 60, 15, wh, 0, 5000 + wh, 0, 4 * wh, b"grid"]))


def order(k, seq, side=1, wh=400):
    return k.sign1(cbor2.dumps([1, m.ORDER, seq, NOW - 60, START + 900, 15, side, wh, 150000]))


def trade(seq, trade_id, seller, buyer, wh=400):
    return HUB.sign1(cbor2.dumps([1, m.TRADE, seq, NOW - 30, trade_id, START + 900, 15, seller, buyer, wh,
                                  150000, 1, 2]))


def settlement(seq, trade_id, wh=400):
    return HUB.sign1(cbor2.dumps([1, m.SETTLEMENT, seq, NOW - 20, trade_id, wh, wh * 150, 0]))


def unsigned(kid, mtype, seq, body=b""):
    # the ledger hashes entries and never checks device signatures: a zero
    # signature keeps big blocks cheap to make
    prot = cbor2.dumps({1: -7, 4: kid})
    payload = cbor2.dumps([1, mtype, seq, NOW - 60, 15, len(body), 0, 0, 0, 0, body or b"m"])
    return cbor2.dumps(cbor2.CBORTag(18, [prot, {}, payload, bytes(64)]))


def interval_entries():
    """Four households' READINGs and ORDERs, two TRADEs and their SETTLEMENTs."""
    out = []
    for h, k in enumerate(HOUSES[:4]):
        for seq in range(10, 14):
            out.append(reading(k, seq, 100 * h + seq) if seq % 2 else order(k, seq, h % 2))
    a, b, c = HOUSES[0].kid, HOUSES[1].kid, HOUSES[2].kid
    out += [trade(500, 1, a, b), trade(501, 2, c, b), settlement(502, 1), settlement(503, 2, 300)]
    return out


def witness_for(k, own):
    w = Witness(k.kid, {HUB.kid: HUB_XY}.get)
    for seq, data in sorted(own):
        w.remember(seq, data)
    return w


# -- Merkle hashes ---------------------------------------------------------------


def _leaves(n, salt=b"L"):
    return [hashlib.sha256(b"\x00" + salt + i.to_bytes(4, "big")).digest() for i in range(n)]


@FEW
@given(st.integers(0, 300))
def test_root_and_every_path_match_lib_merkle_and_the_rfc(n):
    leaves = _leaves(n)
    tree = ledger.MerkleTree(leaves)
    assert tree.root == ledger.merkle_root(leaves) == merkle.root(leaves)
    ref = RefTree(leaves)
    assert tree.root == ref.mth(0, n)
    for i in range(n):
        path = tree.path(i)
        assert path == ref.path(i, 0, n), i
        assert merkle.verify(leaves[i], i, n, path, tree.root), i
    if n:
        i = n // 2
        assert ledger.audit_path(leaves, i) == merkle.audit_path(leaves, i)


def test_every_size_up_to_64_against_lib_merkle():
    for n in range(65):
        leaves = _leaves(n, b"s")
        tree = ledger.MerkleTree(leaves)
        assert tree.root == merkle.root(leaves), n
        assert [tree.path(i) for i in range(n)] == [merkle.audit_path(leaves, i) for i in range(n)], n


def test_the_certificate_transparency_roots():
    leaves = [ledger.leaf_hash(bytes.fromhex(x)) for x in CT_INPUTS]
    for n in range(9):
        assert ledger.merkle_root(leaves[:n]) == bytes.fromhex(CT_ROOTS[n]), n
    assert ledger.leaf_hash(b"abc") == merkle.leaf_hash(b"abc")


def test_merkle_refuses_bad_hashes_and_indices():
    with pytest.raises(LedgerError) as e:
        ledger.merkle_root([bytes(31)])
    assert e.value.reason == "hash"
    with pytest.raises(LedgerError) as e:
        ledger.merkle_root(["x" * 32])
    assert e.value.reason == "hash"
    for leaves, index in (([], 0), (_leaves(3), 3), (_leaves(3), -1), (_leaves(3), True), (_leaves(3), 1.0)):
        with pytest.raises(LedgerError) as e:
            ledger.audit_path(leaves, index)
        assert e.value.reason == "index", (leaves, index)


# -- blocks ------------------------------------------------------------------------


def test_a_block_is_the_protocols_block_signed_by_the_hub():
    entries = interval_entries()
    block = build_block(0, ledger.ZERO_HASH, entries, HUB.sign1, NOW, 900)
    msg = m.open_signed(block.signed, {HUB.kid: HUB_XY}.get)  # read by the gateway's own decoder
    assert msg.type == m.BLOCK and msg.seq == 900 and msg.ts == NOW and msg.kid == HUB.kid
    assert (msg["height"], msg["prev"], msg["root"], msg["entries"]) == (0, bytes(32), block.root, len(entries))
    assert block.hash == hashlib.sha256(block.signed).digest()
    assert block.root == merkle.root([merkle.leaf_hash(e) for e in (x.data for x in block.entries)])
    assert block.leaf_hashes == tuple(merkle.leaf_hash(x.data) for x in block.entries)
    # block order: device entries by (kid, seq), then TRADEs, then SETTLEMENTs
    types = [e.mtype for e in block.entries]
    assert types[-4:] == [m.TRADE, m.TRADE, m.SETTLEMENT, m.SETTLEMENT]
    devs = [(e.kid, e.seq) for e in block.entries[:-4]]
    assert devs == sorted(devs) and len(devs) == 16
    assert [e.seq for e in block.entries[-4:]] == [500, 501, 502, 503]


@FEW
@given(st.randoms(use_true_random=False))
def test_the_input_order_never_matters(rnd):
    entries = interval_entries()
    want = build_block(3, b"\x07" * 32, entries, HUB.sign1, NOW, 900)
    rnd.shuffle(entries)
    got = build_block(3, b"\x07" * 32, entries, HUB.sign1, NOW, 900)
    assert got.root == want.root and got.entries == want.entries
    kid = HOUSES[1].kid
    assert got.member_entries(kid) == want.member_entries(kid)


def test_each_member_witnesses_its_own_entries_with_the_gateways_checker():
    entries = interval_entries()
    block = build_block(0, ledger.ZERO_HASH, entries, HUB.sign1, NOW, 900)
    for k in HOUSES[:4]:
        own = [(s, d) for s, d in ((ledger.parse_entry(d).seq, d) for d in entries)
               if ledger.parse_entry(d).kid == k.kid]
        request = block.proofs_for(k.kid)
        proofs = cbor2.loads(request)[1]
        assert request == encode_request(block.signed, proofs)  # lib's encoder, byte for byte
        assert [p[0] for p in proofs] == [13, 12, 11, 10]  # newest first
        got = witness_for(k, own).check(request, NOW)
        assert got.proven == [13, 12, 11, 10] and got.missing == [] and got.unchecked == []
        assert got.fields == {"height": 0, "block": block.hash}
    # a member without entries still witnesses the header and the chain
    req = block.proofs_for(HOUSES[5].kid)
    assert cbor2.loads(req) == [block.signed, []]
    assert witness_for(HOUSES[5], []).check(req, NOW).proven == []
    # TRADEs and SETTLEMENTs are the hub's: nobody is asked to prove them
    assert block.proofs_for(HUB.kid) == cbor2.dumps([block.signed, []])


def test_entries_signed_by_the_gateways_lib_and_a_chain_of_two_blocks():
    dev = Signer(0x1234567)  # signs as the firmware does (lib/p256.py, RFC 6979)
    fields = {"interval_min": 15, "import_wh": 120, "export_wh": 0, "import_register_wh": 5000,
              "export_register_wh": 0, "power_w": 480, "meter": b"grid"}
    w = Witness(dev.kid, {HUB.kid: HUB_XY}.get)
    signed = []
    for seq in (1, 2, 3, 4):
        signed.append(m.sign(m.READING, seq, NOW - 900 + seq, dict(fields, import_wh=seq), dev.kid, dev))
        w.remember(seq, signed[-1])
    others = [reading(HOUSES[0], 7), trade(600, 9, HOUSES[0].kid, dev.kid)]
    b0 = build_block(0, ledger.ZERO_HASH, signed[:2] + others, HUB.sign1, NOW, 10)
    b1 = build_block(1, b0.hash, signed[2:] + [settlement(601, 9)], HUB.sign1, NOW + 900, 11)
    got0 = w.check(b0.proofs_for(dev.kid), NOW)
    got1 = w.check(b1.proofs_for(dev.kid), NOW + 900)
    assert got0.proven == [2, 1] and not got0.linked
    assert got1.proven == [4, 3] and got1.linked and got1.missing == []
    # the WITNESS the gateway signs, checked as the hub does, makes the block final
    witness = m.sign(m.WITNESS, 5, NOW + 900, got1.fields, dev.kid, dev)
    kid, body = verify1(witness, {dev.kid: key(0x1234567).public_key}.get)
    p = cbor2.loads(body)
    fin = Finality(1, b1.hash, [dev.kid])
    assert fin.add(kid, p[4], p[5]) == ledger.SIGNED and fin.state == "final"


def test_a_big_block_sends_the_newest_proofs_that_fit():
    me = HOUSES[0]
    mine = {seq: unsigned(me.kid, m.READING, seq) for seq in range(1, 121)}
    crowd = [unsigned((0x100 + i).to_bytes(8, "big"), m.READING, s, b"x") for i in range(100) for s in range(99)]
    block = build_block(5, b"\x01" * 32, list(mine.values()) + crowd, HUB.sign1, NOW, 77)
    assert block.count == 120 + 9900
    request = block.proofs_for(me.kid)
    proofs = cbor2.loads(request)[1]
    assert len(request) <= ledger.MAX_REQUEST
    n = len(proofs)
    assert [p[0] for p in proofs] == list(range(120, 120 - n, -1))
    # one more proof would not have fit
    seq = 120 - n
    extra = [seq, block.member_entries(me.kid)[seq - 1][1], block.tree.path(block.member_entries(me.kid)[seq - 1][1])]
    assert len(cbor2.dumps([block.signed, proofs + [extra]])) > ledger.MAX_REQUEST
    w = Witness(me.kid, {HUB.kid: HUB_XY}.get)  # remembers the newest 96
    for s in range(1, 121):
        w.remember(s, mine[s])
    got = w.check(request, NOW)
    assert got.proven == [p[0] for p in proofs]
    assert got.missing == list(range(25, 120 - n + 1))  # the ring's older ones, for the next block


def test_the_byte_limit_binds_before_the_proof_count():
    # more than 96 entries of one member means paths of 7+ hashes (~250
    # bytes a proof), so 8,192 bytes hold about 32 proofs, never 96
    me = HOUSES[0]
    mine = [unsigned(me.kid, m.ORDER, s) for s in range(1, 201)]
    block = build_block(1, b"\x02" * 32, mine, HUB.sign1, NOW, 78)
    request = block.proofs_for(me.kid)
    proofs = cbor2.loads(request)[1]
    assert len(request) <= ledger.MAX_REQUEST and [p[0] for p in proofs] == list(range(200, 200 - len(proofs), -1))
    assert 25 <= len(proofs) < ledger.MAX_PROOFS
    w = Witness(me.kid, {HUB.kid: HUB_XY}.get)
    for seq, data in enumerate(mine, 1):
        w.remember(seq, data)
    assert w.check(request, NOW).proven == [p[0] for p in proofs]


def _refused(reason, *args, **kw):
    with pytest.raises(LedgerError) as e:
        build_block(*args, **kw)
    assert e.value.reason == reason, e.value
    return e.value


def test_build_block_refuses_what_is_no_entry():
    good = interval_entries()
    a = HOUSES[0]
    cases = [
        ("entry", [b"\x01\x02"]),
        ("entry", [reading(a, 1) + b"\x00"]),  # bytes after the message
        ("entry", [a.sign1(cbor2.dumps([1, m.WITNESS, 5, NOW, 0, bytes(32)]))]),
        ("entry", [a.sign1(cbor2.dumps([2, m.READING, 5, NOW]))]),
        ("entry", [a.sign1(cbor2.dumps([1, m.READING, -1, NOW]))]),
        ("entry", [cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -7}), {}, cbor2.dumps([1, 1, 1, 1]), b""]))]),
        ("entry", [cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"", b""]))]),
        ("entry", [bytes(600)]),
        ("entry", ["text"]),
        ("duplicate", [reading(a, 3), reading(a, 3, wh=7)]),
        ("duplicate", [reading(a, 3), order(a, 3)]),  # one counter for all of a device's messages
        ("signer", [a.sign1(cbor2.dumps([1, m.TRADE, 3, NOW, 1]))]),  # a TRADE the hub did not sign
        ("signer", [HUB.sign1(cbor2.dumps([1, m.READING, 3, NOW, 15]))]),
    ]
    for reason, entries in cases:
        _refused(reason, 2, b"\x03" * 32, good + entries, HUB.sign1, NOW, 1)
    e = _refused("prev", 0, b"\x03" * 32, good, HUB.sign1, NOW, 1)
    assert e.height == 0
    _refused("hash", 1, b"\x03" * 31, good, HUB.sign1, NOW, 1)
    for bad in (-1, 2**64, True, "1", None):
        _refused("arg", bad, b"\x03" * 32, good, HUB.sign1, NOW, 1)
        _refused("arg", 1, b"\x03" * 32, good, HUB.sign1, bad, 1)
        _refused("arg", 1, b"\x03" * 32, good, HUB.sign1, NOW, bad)
    _refused("sign", 1, b"\x03" * 32, good, lambda p: b"\x00", NOW, 1)
    _refused("sign", 1, b"\x03" * 32, good, lambda p: HUB.sign1(p + b"\x00"), NOW, 1)


# -- the committee ---------------------------------------------------------------


KIDS = st.lists(st.binary(min_size=8, max_size=8), min_size=1, max_size=40, unique=True)


@settings(max_examples=200, deadline=None)
@given(KIDS, st.integers(0, 2**64 - 1), st.integers(1, 50), st.randoms(use_true_random=False))
def test_committee_rotation(kids, height, size, rnd):
    chosen = committee(kids, height, size)
    n = len(kids)
    assert len(chosen) == min(size, n)
    assert len(set(chosen)) == len(chosen) and set(chosen) <= set(kids)
    shuffled = list(kids)
    rnd.shuffle(shuffled)
    assert committee(shuffled + kids[:2], height, size) == chosen  # order and repeats never matter
    if n <= size:
        assert chosen == sorted(kids)
    # every household serves within any ceil(n / size) heights in a row
    rounds = -(-n // size)
    if height + rounds <= 2**64:
        served = set()
        for h in range(height, height + rounds):
            served.update(committee(kids, h, size))
        assert served == set(kids)


def test_committee_windows_move_on_by_size():
    kids = [bytes([i]) * 8 for i in range(7)]
    assert committee(kids, 0, 3) == kids[0:3]
    assert committee(kids, 1, 3) == kids[3:6]
    assert committee(kids, 2, 3) == [kids[6], kids[0], kids[1]]
    assert committee(kids, 7, 3) == kids[0:3]
    assert committee([], 5, 3) == []
    for args in (([b"short"], 0, 1), ([bytes(8)], -1, 1), ([bytes(8)], 0, 0), ([bytes(8)], 0, True)):
        with pytest.raises(LedgerError) as e:
            committee(*args)
        assert e.value.reason in ("kid", "arg")


# -- finality ----------------------------------------------------------------------


H = hashlib.sha256(b"the block").digest()
OTHER = hashlib.sha256(b"another block").digest()


def test_exactly_two_thirds_of_the_committee_make_a_block_final():
    needed = {1: 1, 2: 2, 3: 2, 4: 3, 5: 4, 6: 4, 7: 5, 8: 6, 9: 6, 10: 7}
    for size, want in needed.items():
        members = [bytes([i + 1]) * 8 for i in range(size)]
        fin = Finality(4, H, members)
        assert fin.needed == want and fin.state == "pending"
        for kid in members[:want - 1]:
            assert fin.add(kid, 4, H) == ledger.SIGNED
            assert fin.add(kid, 4, H) == ledger.REPEAT  # once per member
        # what never counts
        assert fin.add(b"\xee" * 8, 4, H) == ledger.NOT_MEMBER
        assert fin.add(members[-1], 4, OTHER) == ledger.MISMATCH
        assert fin.add(members[-1], 4, OTHER) == ledger.REPEAT
        assert fin.add(members[-1], 5, H) == ledger.OTHER_HEIGHT
        assert fin.state == "pending" and not fin.final and fin.fork_alarm, size
        assert fin.mismatched == [members[-1]]
        assert fin.add(members[want - 1], 4, H) == ledger.SIGNED
        assert fin.state == "final" and fin.final, size
        assert fin.status()["signed"] == want and fin.status()["state"] == "final"


EVENTS = st.lists(st.tuples(st.integers(0, 14), st.sampled_from([3, 4]), st.booleans()), max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10), EVENTS, st.randoms(use_true_random=False))
def test_finality_counts_distinct_members_in_any_order(size, events, rnd):
    members = [bytes([i]) * 8 for i in range(size)]
    kids = members + [bytes([0x80 + i]) * 8 for i in range(15 - size)]  # the rest are no members
    witnesses = [(kids[k], height, H if right else OTHER) for k, height, right in events]
    fin = Finality(3, H, reversed(members))
    for w in witnesses:
        fin.add(*w)
    signers = {kid for kid, height, h in witnesses if kid in members and height == 3 and h == H}
    assert fin.signed == sorted(signers)
    assert fin.final == (3 * len(signers) >= 2 * size)
    assert fin.mismatched == sorted({kid for kid, height, h in witnesses
                                     if kid in members and height == 3 and h == OTHER})
    again = Finality(3, H, members)
    rnd.shuffle(witnesses)
    for w in witnesses:
        again.add(*w)
    assert again.status() == fin.status()


def test_finality_refuses_bad_input():
    for args, reason in (((0, H, []), "committee"), ((0, H[:31], [bytes(8)]), "hash"),
                         ((-1, H, [bytes(8)]), "arg"), ((0, H, [b"x"]), "kid")):
        with pytest.raises(LedgerError) as e:
            Finality(*args)
        assert e.value.reason == reason
    fin = Finality(0, H, [bytes(8)])
    for args, reason in (((b"x", 0, H), "kid"), ((bytes(8), 0, b"h"), "hash"), ((bytes(8), "0", H), "arg")):
        with pytest.raises(LedgerError) as e:
            fin.add(*args)
        assert e.value.reason == reason


# -- auditing the chain -----------------------------------------------------------


def _chain(length=3):
    blocks, prev = [], ledger.ZERO_HASH
    for height in range(length):
        a, b = HOUSES[height % 3], HOUSES[height % 3 + 1]
        entries = [reading(a, 20 + height), order(b, 30 + height), trade(100 + 3 * height, height, a.kid, b.kid),
                   settlement(101 + 3 * height, height)]
        block = build_block(height, prev, entries, HUB.sign1, NOW + 900 * height, 102 + 3 * height)
        blocks.append((block.signed, [e.data for e in block.entries]))
        prev = block.hash
    return blocks, prev


CHAIN, HEAD = _chain()
DEVICE_KEYS = {k.kid: k.public_key for k in HOUSES}.get


def _fails(blocks, reason=None, height=None, **kw):
    with pytest.raises(LedgerError) as e:
        verify_chain(blocks, HUB.public_key, **kw)
    if reason is not None:
        assert e.value.reason == reason, e.value
    if height is not None:
        assert e.value.height == height, e.value
    return e.value


def test_an_honest_chain_verifies():
    report = verify_chain(CHAIN, HUB.public_key, device_keys=DEVICE_KEYS)
    assert report == ledger.ChainReport(3, 12, 0, 2, HEAD)
    first = hashlib.sha256(CHAIN[0][0]).digest()
    assert verify_chain(CHAIN[1:], HUB.public_key, after=(0, first)).first_height == 1
    assert verify_chain([], HUB.public_key).blocks == 0


def test_every_changed_byte_of_a_block_is_found_at_its_height():
    for height, (signed, entries) in enumerate(CHAIN):
        for i in range(len(signed)):
            for flip in (0x01, 0x80):
                bad = bytearray(signed)
                bad[i] ^= flip
                chain = list(CHAIN)
                chain[height] = (bytes(bad), entries)
                _fails(chain, height=height)


def test_every_changed_byte_of_an_entry_is_found_at_its_height():
    for height, (signed, entries) in enumerate(CHAIN):
        for j, entry in enumerate(entries):
            for i in range(len(entry)):
                bad = bytearray(entry)
                bad[i] ^= 0x04
                chain = list(CHAIN)
                chain[height] = (signed, entries[:j] + [bytes(bad)] + entries[j + 1:])
                _fails(chain, height=height)


@FEW
@given(st.integers(0, 2), st.data())
def test_a_random_change_anywhere_is_found(height, data):
    signed, entries = CHAIN[height]
    parts = [signed] + entries
    which = data.draw(st.integers(0, len(parts) - 1))
    pos = data.draw(st.integers(0, len(parts[which]) - 1))
    mask = data.draw(st.integers(1, 255))
    bad = bytearray(parts[which])
    bad[pos] ^= mask
    parts[which] = bytes(bad)
    chain = list(CHAIN)
    chain[height] = (parts[0], parts[1:])
    _fails(chain, height=height)


def test_what_the_audit_names():
    s0, e0 = CHAIN[0]
    s1, e1 = CHAIN[1]
    _fails([(s0, e0[::-1])] + CHAIN[1:], "order", 0)
    _fails([(s0, e0[:-1])] + CHAIN[1:], "count", 0)
    _fails([(s0, e0[:-1] + [settlement(999, 9)])] + CHAIN[1:], "root", 0)
    _fails([CHAIN[1], CHAIN[0]], "height", 0)
    _fails([CHAIN[0], CHAIN[2]], "height", 1)
    _fails(CHAIN[1:], "height", 0)  # no `after`: the chain starts at 0
    _fails(CHAIN[1:], "prev", 1, after=(0, bytes(32)))
    _fails([(s0 + b"\x00", e0)], "block", 0)
    _fails([(bytes(600), e0)], "block", 0)
    _fails([(HUB.sign1(cbor2.dumps([1, m.TRADE, 1, NOW, 1])), [])], "block", 0)
    _fails([(key(99).sign1(cbor2.loads(s0).value[2]), e0)], "signature", 0)
    with pytest.raises(LedgerError) as e:
        verify_chain(CHAIN, key(99).public_key)
    assert (e.value.reason, e.value.height) == ("signature", 0)
    # the hub's counter only grows
    b0 = build_block(0, ledger.ZERO_HASH, [], HUB.sign1, NOW, 50)
    b1 = build_block(1, b0.hash, [], HUB.sign1, NOW, 50)
    _fails([(b0.signed, []), (b1.signed, [])], "seq", 1)
    # a forged entry signature, when the device keys are given
    forged = unsigned(HOUSES[0].kid, m.READING, 1)
    b = build_block(0, ledger.ZERO_HASH, [forged], HUB.sign1, NOW, 1)
    assert verify_chain([(b.signed, [forged])], HUB.public_key).entries == 1
    _fails([(b.signed, [forged])], "entry_signature", 0, device_keys=DEVICE_KEYS)
    _fails([(b.signed, [b"junk"])], "entry", 0)
    _fails([("not bytes", [])], "arg", 0)
    _fails(CHAIN, "hash", after=(0, b"short"))
    _fails(CHAIN, "arg", after=7)


def test_proofs_for_ten_thousand_entries_are_quick_to_build():
    # not a timing test: it checks every path of a 10k block against the root
    entries = [unsigned((0x200 + i % 100).to_bytes(8, "big"), m.READING, i) for i in range(10_000)]
    block = build_block(9, b"\x09" * 32, entries, HUB.sign1, NOW, 9)
    leaves = block.leaf_hashes
    for i in random.Random(1).sample(range(10_000), 200):
        assert merkle.verify(leaves[i], i, 10_000, block.tree.path(i), block.root)
    sizes = [len(block.proofs_for((0x200 + k).to_bytes(8, "big"))) for k in range(100)]
    assert max(sizes) <= ledger.MAX_REQUEST


HOSTILE = [b"\x5b" + (2**32).to_bytes(8, "big"), b"\x9b" + (2**64 - 1).to_bytes(8, "big"), b"\x81" * 500,
           b"\xd2\x9f\xff", b"\xd2\x84\x5f\xff\xa0\x40\x40", b"\xfb" + bytes(8), b"\xd2\x84\x41\xa1\xa0\x40\x40"]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=600), st.sampled_from(HOSTILE),
                 st.tuples(st.integers(0, 200), st.integers(1, 255)).map(
                     lambda t: bytes(b ^ t[1] if i == t[0] % 125 else b for i, b in enumerate(reading(HOUSES[0], 1))))))
def test_any_bytes_give_an_entry_or_a_ledger_error(data):
    try:
        e = ledger.parse_entry(data)
    except LedgerError as err:
        assert err.reason == "entry"
    else:
        assert e.data == data and e.mtype in ledger.ENTRY_GROUP
