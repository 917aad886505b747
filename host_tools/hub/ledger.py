"""The hub's witnessed ledger (docs/hub.md, "The witnessed ledger"): blocks of entries, the
committee that witnesses them, finality, and an audit of the whole chain.
Pure: bytes and plain values in, bytes and plain values out.

- Merkle tree hashes are RFC 6962 with SHA-256, written here on hashlib,
  independent of lib/merkle.py (the tests compare the two).
- A block's entries are the exact bytes of signed COSE_Sign1 messages:
  the devices' READINGs and ORDERs, then the hub's TRADEs, then its
  SETTLEMENTs. Within each group they are sorted by (kid, seq): the
  caller's order never matters, and one (kid, seq) appears once.
- The BLOCK payload is [1, 5, seq, ts, height, prev, root, entries]; the
  block hash is SHA-256 of the signed BLOCK bytes.
- The committee of a height is a window of `size` households over the
  sorted kids, moved on by `size` each height (wrapping round).
- A block is final once 3 x (members who signed its hash) >= 2 x committee
  size, i.e. at least 2/3 of the committee, rounded up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import NamedTuple

import cbor2

from host_tools.hub.cose_es256 import MAX_MESSAGE, TAG_SIGN1, Rejected, kid_of, loads_exact, verify1

VERSION = 1
READING, ORDER, TRADE, SETTLEMENT, BLOCK = 1, 2, 3, 4, 5
# Entry groups in block order: the devices' messages, then the hub's.
ENTRY_GROUP = {READING: 0, ORDER: 0, TRADE: 1, SETTLEMENT: 2}
HUB_TYPES = (TRADE, SETTLEMENT)

HASH_LEN = 32
KID_LEN = 8
U32 = 2**32 - 1
U64 = 2**64 - 1
ZERO_HASH = bytes(HASH_LEN)  # prev of the block at height 0
EMPTY_ROOT = hashlib.sha256(b"").digest()

# The witness request limits a gateway enforces (lib/trade/witness.py).
MAX_REQUEST = 8192
MAX_PROOFS = 96

STATE_PENDING = "pending"
STATE_FINAL = "final"


class LedgerError(ValueError):
    """Input the ledger refuses. `reason` is a short machine-readable word;
    `height` names the block it is about, or is None."""

    def __init__(self, reason, detail="", height=None):
        where = f"block {height}: " if height is not None else ""
        super().__init__(f"{where}{reason}: {detail}" if detail else f"{where}{reason}")
        self.reason = reason
        self.height = height


def is_uint(v, hi=U64):
    """An int in 0..hi, and not a bool (type(), not isinstance)."""
    return type(v) is int and 0 <= v <= hi


def _check_hash(h, what="hash"):
    if not isinstance(h, bytes) or len(h) != HASH_LEN:
        raise LedgerError("hash", f"{what} must be {HASH_LEN} bytes")


def _check_kid(kid):
    if not isinstance(kid, bytes) or len(kid) != KID_LEN:
        raise LedgerError("kid", f"a kid is {KID_LEN} bytes, got {kid!r}")


# -- RFC 6962 Merkle tree hashes ------------------------------------------------


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + bytes(entry)).digest()


def _node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


class MerkleTree:
    """All levels of the tree, built once: level 0 holds the leaf hashes,
    each level above pairs neighbours, and an unpaired last node moves up
    unchanged. That is RFC 6962's split at the largest power of two below
    n, built bottom-up, so a path costs no hashing at all."""

    def __init__(self, leaf_hashes):
        level = list(leaf_hashes)
        for h in level:
            _check_hash(h, "leaf hash")
        self.size = len(level)
        self.levels = [level]
        while len(level) > 1:
            up = [_node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) & 1:
                up.append(level[-1])
            self.levels.append(up)
            level = up

    @property
    def root(self) -> bytes:
        return self.levels[-1][0] if self.size else EMPTY_ROOT

    def path(self, index: int) -> list:
        """PATH(index, D[n]) of RFC 6962 section 2.1.1, leaf side first."""
        if not is_uint(index) or index >= self.size:
            raise LedgerError("index", f"index {index!r} in a tree of {self.size} leaves")
        path = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):  # else this node moved up unpaired
                path.append(level[sibling])
            index >>= 1
        return path


def merkle_root(leaf_hashes) -> bytes:
    return MerkleTree(leaf_hashes).root


def audit_path(leaf_hashes, index) -> list:
    """One path; for many paths of one tree build a MerkleTree once."""
    return MerkleTree(leaf_hashes).path(index)


# -- entries ----------------------------------------------------------------------


class Entry(NamedTuple):
    """A signed message as a ledger entry: its type, signer and seq, and
    the exact bytes that are hashed."""
    mtype: int
    kid: bytes
    seq: int
    data: bytes

    @property
    def key(self):
        # block order; a device numbers all its messages with one counter,
        # so a READING and an ORDER of one seq are the same message twice
        return (ENTRY_GROUP[self.mtype], self.kid, self.seq)


def _decode_one(data):
    # exactly one CBOR item: an entry may not carry bytes after its message
    try:
        return loads_exact(data)
    except Exception as e:  # cbor2 raises many kinds on malformed input
        raise LedgerError("entry", f"not one CBOR item: {type(e).__name__}: {e}") from None


def _open_envelope(data):
    """COSE_Sign1 bytes -> (kid from the protected header, unprotected, payload
    as decoded). No signature check: the caller checked it on ingest."""
    if not isinstance(data, bytes):
        raise LedgerError("entry", "an entry is bytes")
    if len(data) > MAX_MESSAGE:
        raise LedgerError("entry", f"{len(data)} bytes, at most {MAX_MESSAGE}")
    msg = _decode_one(data)
    if not isinstance(msg, cbor2.CBORTag) or msg.tag != TAG_SIGN1:
        raise LedgerError("entry", "not a tagged COSE_Sign1")
    v = msg.value
    if (not isinstance(v, (list, tuple)) or len(v) != 4 or not isinstance(v[1], Mapping)
            or not all(isinstance(v[i], bytes) for i in (0, 2, 3))):
        raise LedgerError("entry", "not a 4-element COSE_Sign1")
    try:
        protected = cbor2.loads(v[0])
        payload = cbor2.loads(v[2])
    except Exception as e:
        raise LedgerError("entry", f"header or payload not CBOR: {type(e).__name__}") from None
    kid = protected.get(4) if isinstance(protected, Mapping) else None
    if not isinstance(kid, bytes) or len(kid) != KID_LEN:
        raise LedgerError("entry", "no 8-byte kid in the protected header")
    if (not isinstance(payload, (list, tuple)) or len(payload) < 4 or payload[0] != VERSION
            or not all(is_uint(x) for x in payload[1:4])):
        raise LedgerError("entry", "payload is not [1, type, seq, ts, ...]")
    return kid, v[1], v[2], payload


def parse_entry(data: bytes) -> Entry:
    """Signed message bytes -> Entry; LedgerError("entry") unless it is a
    COSE_Sign1 READING, ORDER, TRADE or SETTLEMENT with a kid and a seq."""
    kid, _, _, payload = _open_envelope(data)
    mtype = payload[1]
    if mtype not in ENTRY_GROUP:
        raise LedgerError("entry", f"a message of type {mtype} is no ledger entry")
    return Entry(mtype, kid, payload[2], data)


def block_order(entries) -> list:
    """Entry bytes (any order) -> [Entry] in block order; LedgerError
    ("duplicate") when one (kid, seq) comes twice in a group."""
    parsed = sorted((parse_entry(e) for e in entries), key=lambda e: e.key)
    for a, b in zip(parsed, parsed[1:]):
        if a.key == b.key:
            raise LedgerError("duplicate", f"kid {a.kid.hex()} seq {a.seq} twice")
    return parsed


def _check_signers(entries, hub_kid, height=None):
    for e in entries:
        if (e.mtype in HUB_TYPES) != (e.kid == hub_kid):
            who = "the hub" if e.mtype in HUB_TYPES else "a device"
            raise LedgerError("signer", f"type {e.mtype} seq {e.seq} signed by {e.kid.hex()}, not {who}",
                              height)


# -- blocks -----------------------------------------------------------------------


def _uint_head_len(n):
    # bytes a CBOR head takes for the count n
    return 1 if n < 24 else 2 if n < 256 else 3 if n < 65536 else 5 if n <= U32 else 9


class Block:
    """A signed block and what the hub needs to have it witnessed."""

    def __init__(self, height, prev, root, ts, seq, signed, entries, tree):
        self.height = height
        self.prev = prev
        self.root = root
        self.ts = ts
        self.seq = seq
        self.signed = signed  # the BLOCK message as published: sign once, keep these bytes
        self.hash = hashlib.sha256(signed).digest()
        self.entries = tuple(entries)  # Entry, in block order
        self.tree = tree
        self.leaf_hashes = tuple(tree.levels[0])
        self._by_kid = {}  # kid -> [(seq, index)] of its READINGs and ORDERs
        for index, e in enumerate(self.entries):
            if e.mtype not in HUB_TYPES:
                self._by_kid.setdefault(e.kid, []).append((e.seq, index))

    @property
    def count(self):
        return len(self.entries)

    def member_entries(self, kid) -> list:
        """[(seq, index)] of kid's READINGs and ORDERs in the block, by seq."""
        _check_kid(kid)
        return list(self._by_kid.get(kid, ()))

    def proofs_for(self, kid) -> bytes:
        """The witness request for one member: [signed BLOCK, [[seq, index,
        path], ...]] (untagged CBOR), its own READINGs and ORDERs newest
        first, as many as fit in 96 proofs and 8,192 bytes. Hub-signed
        entries are never sent: a gateway only proves what it signed. A
        member with no entries gets an empty list and still witnesses the
        header and the chain."""
        size = 1 + _uint_head_len(len(self.signed)) + len(self.signed)
        proofs = []
        body = 0
        for seq, index in reversed(self.member_entries(kid)):
            proof = [seq, index, self.tree.path(index)]
            cost = len(cbor2.dumps(proof))
            if (len(proofs) == MAX_PROOFS
                    or size + _uint_head_len(len(proofs) + 1) + body + cost > MAX_REQUEST):
                break  # the member reports the older ones as missing
            proofs.append(proof)
            body += cost
        data = cbor2.dumps([self.signed, proofs])
        assert len(data) <= MAX_REQUEST, len(data)  # the size sum above is exact
        return data

    def __repr__(self):
        return f"<Block {self.height} {self.hash.hex()[:16]}: {self.count} entries>"


def block_payload(seq, ts, height, prev, root, count) -> bytes:
    return cbor2.dumps([VERSION, BLOCK, seq, ts, height, prev, root, count])


def build_block(height, prev_hash, entries, sign, ts, seq) -> Block:
    """Order the entries (bytes of signed messages), hash them, and have the
    hub sign the header. sign(payload bytes) -> COSE_Sign1 bytes, e.g.
    HubKey.sign1. TRADEs and SETTLEMENTs must carry the signing key's kid,
    READINGs and ORDERs another one."""
    for name, v in (("height", height), ("ts", ts), ("seq", seq)):
        if not is_uint(v):
            raise LedgerError("arg", f"{name} must be an int in 0..2^64-1, got {v!r}")
    _check_hash(prev_hash, "prev")
    if height == 0 and prev_hash != ZERO_HASH:
        raise LedgerError("prev", "the block at height 0 has 32 zero bytes as prev", height)
    ordered = block_order(entries)
    if len(ordered) > U32:
        raise LedgerError("arg", "more than 2^32-1 entries")
    tree = MerkleTree([leaf_hash(e.data) for e in ordered])
    payload = block_payload(seq, ts, height, prev_hash, tree.root, len(ordered))
    signed = sign(payload)
    try:
        hub_kid, _, got, _ = _open_envelope(signed)
    except LedgerError as e:
        raise LedgerError("sign", f"the signer's output: {e}", height) from None
    if got != payload:
        raise LedgerError("sign", "the signer's output carries another payload", height)
    _check_signers(ordered, hub_kid, height)
    return Block(height, prev_hash, tree.root, ts, seq, signed, ordered, tree)


# -- the committee ------------------------------------------------------------------


def committee(kids, height, size) -> list:
    """The households asked to witness the block at `height`: a window of
    `size` of the sorted, distinct kids, starting at (height x size) mod n
    and wrapping round, so each height moves on by `size` and every
    household serves once in any ceil(n / size) heights in a row. All of
    them, sorted, if there are no more than `size`. The hub cannot steer
    the choice, since it depends on nothing the hub signs."""
    if not is_uint(height):
        raise LedgerError("arg", f"height must be an int in 0..2^64-1, got {height!r}")
    if type(size) is not int or size < 1:
        raise LedgerError("arg", f"committee size must be an int >= 1, got {size!r}")
    members = set()
    for kid in kids:
        _check_kid(kid)
        members.add(kid)
    ordered = sorted(members)
    n = len(ordered)
    if n <= size:
        return ordered
    start = (height % n) * size % n
    return [ordered[(start + i) % n] for i in range(size)]


# -- finality -------------------------------------------------------------------------

# What Finality.add did with a WITNESS
SIGNED = "signed"  # a member's first WITNESS of this block: counted
REPEAT = "repeat"  # that member again, or its mismatch again: nothing changes
NOT_MEMBER = "not_member"  # not on this block's committee: ignored
OTHER_HEIGHT = "other_height"  # a WITNESS of another height: ignored
MISMATCH = "mismatch"  # a member signed another hash at this height: fork alarm


class Finality:
    """The witnesses of one block. Feed it WITNESSes whose signatures the
    caller has verified; the result does not depend on their order."""

    def __init__(self, height, block_hash, members):
        if not is_uint(height):
            raise LedgerError("arg", f"height must be an int in 0..2^64-1, got {height!r}")
        _check_hash(block_hash, "block hash")
        self.height = height
        self.block_hash = block_hash
        self.members = frozenset(members)
        for kid in self.members:
            _check_kid(kid)
        if not self.members:
            # nobody could ever witness it; 0 >= 0 must not read as final
            raise LedgerError("committee", "a block needs a committee of at least one household", height)
        self._signed = set()
        self._mismatched = set()

    @property
    def size(self):
        return len(self.members)

    @property
    def needed(self):
        """Signatures that make the block final: ceil(2 x size / 3)."""
        return (2 * self.size + 2) // 3

    def add(self, kid, height, block_hash) -> str:
        """Record a verified WITNESS {height, block} signed by kid; returns
        SIGNED, REPEAT, NOT_MEMBER, OTHER_HEIGHT or MISMATCH."""
        _check_kid(kid)
        _check_hash(block_hash, "block hash")
        if not is_uint(height):
            raise LedgerError("arg", f"height must be an int in 0..2^64-1, got {height!r}")
        if height != self.height:
            return OTHER_HEIGHT
        if kid not in self.members:
            return NOT_MEMBER
        # one mark per member and kind: bounded by the committee, whatever is sent
        seen = self._signed if block_hash == self.block_hash else self._mismatched
        if kid in seen:
            return REPEAT
        seen.add(kid)
        return SIGNED if seen is self._signed else MISMATCH

    @property
    def signed(self) -> list:
        return sorted(self._signed)

    @property
    def mismatched(self) -> list:
        """Members who signed another block of this height."""
        return sorted(self._mismatched)

    @property
    def final(self) -> bool:
        return 3 * len(self._signed) >= 2 * self.size

    @property
    def state(self) -> str:
        return STATE_FINAL if self.final else STATE_PENDING

    @property
    def fork_alarm(self) -> bool:
        return bool(self._mismatched)

    def status(self) -> dict:
        """For a dashboard: an unfinished block shows as pending."""
        return {"height": self.height, "block": self.block_hash.hex(), "state": self.state,
                "signed": len(self._signed), "needed": self.needed, "committee": self.size,
                "mismatched": [k.hex() for k in self.mismatched]}

    def __repr__(self):
        alarm = f", {len(self._mismatched)} MISMATCHED" if self._mismatched else ""
        return f"<Finality {self.height}: {self.state}, {len(self._signed)}/{self.size} signed{alarm}>"


# -- auditing the chain ---------------------------------------------------------------


class ChainReport(NamedTuple):
    blocks: int
    entries: int
    first_height: int | None
    last_height: int | None
    head: bytes | None  # hash of the last block: the next block's prev


def _open_block(signed, hub_public_key, hub_kid, height_hint):
    lookup = {hub_kid: hub_public_key}.get
    try:
        _, payload_bytes = verify1(signed, lookup)
    except Rejected as e:
        reason = "signature" if e.reason in ("signature", "unknown_key", "kid", "alg") else "block"
        raise LedgerError(reason, str(e), height_hint) from None
    try:
        _, unprotected, _, p = _open_envelope(signed)
    except LedgerError as e:
        raise LedgerError("block", str(e), height_hint) from None
    # The hub publishes one exact form; bytes outside the signature (the
    # unprotected header, the CBOR heads) must not vary either.
    if unprotected or cbor2.dumps(cbor2.loads(signed)) != signed:
        raise LedgerError("block", "not in the hub's exact COSE_Sign1 form", height_hint)
    if (len(p) < 8 or p[1] != BLOCK or not is_uint(p[4]) or not isinstance(p[5], bytes)
            or len(p[5]) != HASH_LEN or not isinstance(p[6], bytes) or len(p[6]) != HASH_LEN
            or not is_uint(p[7], U32)):
        raise LedgerError("block", "payload is not a BLOCK", height_hint)
    return p


def verify_chain(blocks, hub_public_key, after=None, device_keys=None) -> ChainReport:
    """Re-check blocks: an iterable of (signed BLOCK bytes, [entry bytes in
    block order]), lowest height first. after: (height, hash) of the block
    before the first; None means the first block is height 0.
    device_keys(kid) -> public key or None: if given, every entry's
    signature is checked too. Raises LedgerError(reason, height) at the
    first bad block; returns a ChainReport."""
    hub_kid = kid_of(hub_public_key)
    if after is None:
        want_height, want_prev = 0, ZERO_HASH
    else:
        if not isinstance(after, (tuple, list)) or len(after) != 2 or not is_uint(after[0]):
            raise LedgerError("arg", "after is (height, hash)")
        want_height, want_prev = after[0] + 1, after[1]
        _check_hash(want_prev, "after hash")
    first = last = None
    count = total = 0
    last_seq = -1
    for item in blocks:
        height = want_height
        if not isinstance(item, (tuple, list)) or len(item) != 2 or not isinstance(item[0], bytes):
            raise LedgerError("arg", "each block is (signed BLOCK bytes, entries)", height)
        signed, entries = item
        p = _open_block(signed, hub_public_key, hub_kid, height)
        seq, block_height, prev, root, declared = p[2], p[4], p[5], p[6], p[7]
        if block_height != height:
            raise LedgerError("height", f"height {block_height} where {height} follows", height)
        if prev != want_prev:
            raise LedgerError("prev", "prev is not the hash of the block before", height)
        if seq <= last_seq:
            raise LedgerError("seq", f"seq {seq} after {last_seq}: the hub's counter only grows", height)
        entries = list(entries)
        if len(entries) != declared:
            raise LedgerError("count", f"{len(entries)} entries, the block says {declared}", height)
        parsed = []
        for data in entries:
            try:
                parsed.append(parse_entry(data))
            except LedgerError as e:
                raise LedgerError("entry", str(e), height) from None
        for a, b in zip(parsed, parsed[1:]):
            if a.key >= b.key:
                raise LedgerError("order", f"kid {b.kid.hex()} seq {b.seq} is out of block order", height)
        _check_signers(parsed, hub_kid, height)
        if device_keys is not None:
            lookup = lambda kid: hub_public_key if kid == hub_kid else device_keys(kid)  # noqa: E731
            for e in parsed:
                try:
                    verify1(e.data, lookup)
                except Rejected as err:
                    raise LedgerError("entry_signature", f"kid {e.kid.hex()} seq {e.seq}: {err}",
                                      height) from None
        if merkle_root([leaf_hash(e.data) for e in parsed]) != root:
            raise LedgerError("root", "the entries do not hash to the block's root", height)
        if first is None:
            first = height
        last = height
        count += 1
        total += len(parsed)
        last_seq = seq
        want_height, want_prev = height + 1, hashlib.sha256(signed).digest()
    return ChainReport(count, total, first, last, want_prev if count else None)
