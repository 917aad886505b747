# Witnessing ledger blocks (docs/trading.md, "Witnessing").
#
# The hub chains its blocks: a BLOCK header (height, prev, root, entries) is
# signed by the hub, `root` is the RFC 6962 Merkle root (lib/merkle.py) of
# the block's entries, each the exact bytes of a signed READING or ORDER,
# and `prev` the SHA-256 of the previous signed BLOCK message. A committee
# member witnesses a block by signing a WITNESS (height, SHA-256 of the
# signed BLOCK) once it has checked, on its own:
#
#   - the hub signed the block;
#   - every entry the hub says is ours is byte for byte what we signed, at
#     the index the proof gives, in a tree of `entries` leaves;
#   - the block extends the chain we saw, and no other block of the same
#     height was shown to us (a fork).
#
# The request comes on the device's `in` topic as the CBOR array
#
#     [signed BLOCK bytes, [[seq, index, [hash, ...]], ...]]
#
# untagged, so it is told apart from the signed messages (tag 18) on the
# same topic by its first byte. Sizes are capped before anything is decoded.
# Our entries are remembered as leaf hashes in a pre-allocated ring, the
# blocks we witnessed in another; nothing grows with the input.
import hashlib
from array import array

import cbor
import merkle
from compat import const
from trade import messages
from trade import replay

_MAX_REQUEST = const(8192)  # bytes
_MAX_PROOFS = const(96)
_MAX_PATH = const(32)  # the deepest tree a uint32 entry count allows
# top array, block, proof list, each proof (3 + its path): the most items
# a request within _MAX_REQUEST can declare while obeying the caps
_MAX_ITEMS = const(3 + 4 * 96 + 8192 // 34)
_DEPTH = const(4)  # request, proof list, proof, path
_HASH = const(32)
_BLOCKS = const(8)  # heights remembered for the chain and fork checks

# ring slot states
_EMPTY = const(0)
_SIGNED = const(1)  # remembered, not yet proven in a block
_PROVEN = const(2)  # proven in a witnessed block


class WitnessError(ValueError):
    # reason: "size" (request, proof count or path length over its cap),
    # "malformed" (not the request's CBOR shape, or not a BLOCK), "signature"
    # (not signed by a hub key: also an unknown kid or a bad alg), "future"
    # (block ts more than 300 s ahead), "unknown_entry" (a proof's seq is not
    # one of our entries), "duplicate" (one seq proven twice), "proof" (a
    # path does not lead to the block's root), "chain" (prev is not the
    # block we saw at height - 1, or the block we saw at height + 1 does not
    # follow it), "fork" (another block of this height was witnessed),
    # "stale" (below the heights we still remember); "arg" for a caller's
    # mistake (remember() with a seq not above the last one, a bad keep)
    def __init__(self, reason, detail=""):
        super().__init__("%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason


class Witnessed:
    # What check() found. fields: the WITNESS fields for messages.sign.
    # proven: our seqs whose entries the block holds, checked; unchecked:
    # seqs the hub named that are older than anything we still remember (we
    # vouch for nothing about them); missing: remembered seqs below the
    # highest proven here that no witnessed block has proven yet (the
    # journal may resend them); linked: prev was checked against the block
    # we saw at height - 1.
    def __init__(self, height, block, proven, unchecked, missing, linked):
        self.height = height
        self.block = block
        self.fields = {"height": height, "block": block}
        self.proven = proven
        self.unchecked = unchecked
        self.missing = missing
        self.linked = linked

    def __repr__(self):
        return "<witnessed block %d: %d proven, %d unchecked, %d missing%s>" % (
            self.height, len(self.proven), len(self.unchecked), len(self.missing),
            "" if self.linked else ", unlinked")


def is_request(data):
    """True if a payload from the `in` topic looks like a witness request
    (an untagged CBOR array of 2 or more), not a signed message."""
    return isinstance(data, (bytes, bytearray, memoryview)) and len(data) > 0 and 0x82 <= data[0] <= 0x97


def encode_request(signed_block, proofs):
    """The request a hub sends: proofs as [(seq, index, [hash, ...]), ...]."""
    return cbor.dumps([signed_block, [[s, i, list(p)] for s, i, p in proofs]])


def _int(v, hi):
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= hi


def decode_request(data):
    """Request bytes -> (signed BLOCK bytes, [(seq, index, path), ...]),
    the shape and the caps checked; nothing cryptographic."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WitnessError("malformed", "a request is bytes")
    if len(data) > _MAX_REQUEST:
        raise WitnessError("size", "%d bytes, at most %d" % (len(data), _MAX_REQUEST))
    try:
        req = cbor.loads(data, _DEPTH, _MAX_ITEMS)
    except cbor.CborError as e:
        raise WitnessError("size" if e.reason == "items" else "malformed", str(e))
    # fields may be appended in later versions: extra elements are ignored
    if not isinstance(req, list) or len(req) < 2:
        raise WitnessError("malformed", "not [block, proofs]")
    block, proofs = req[0], req[1]
    if not isinstance(block, bytes) or not isinstance(proofs, list):
        raise WitnessError("malformed", "not [block bytes, proof list]")
    if len(block) > messages.MAX_MESSAGE:
        raise WitnessError("size", "block of %d bytes" % len(block))
    if len(proofs) > _MAX_PROOFS:
        raise WitnessError("size", "%d proofs, at most %d" % (len(proofs), _MAX_PROOFS))
    out = []
    for p in proofs:
        if not isinstance(p, list) or len(p) < 3:
            raise WitnessError("malformed", "a proof is [seq, index, path]")
        seq, index, path = p[0], p[1], p[2]
        if not _int(seq, messages.U64) or not _int(index, merkle.MAX_SIZE - 1):
            raise WitnessError("malformed", "seq or index out of range")
        if not isinstance(path, list):
            raise WitnessError("malformed", "a path is a list of hashes")
        if len(path) > _MAX_PATH:
            raise WitnessError("size", "path of %d hashes, at most %d" % (len(path), _MAX_PATH))
        for h in path:
            if not isinstance(h, bytes) or len(h) != _HASH:
                raise WitnessError("malformed", "a path hash is 32 bytes")
        out.append((seq, index, path))
    return block, out


class Witness:
    # kid: this device's id; hub_key_lookup(kid) -> (x, y) of a hub key or
    # None (only hub keys: a block signed by anyone else is refused); keep:
    # how many of our entries are remembered (32 bytes of hash each).
    def __init__(self, kid, hub_key_lookup, keep=96):
        if not isinstance(keep, int) or isinstance(keep, bool) or not 1 <= keep <= 4096:
            raise WitnessError("arg", "keep must be 1..4096")
        self.kid = kid
        self._lookup = hub_key_lookup
        self.keep = keep
        self._seqs = array("Q", bytes(8 * keep))
        self._hashes = bytearray(_HASH * keep)
        self._state = bytearray(keep)
        self._next = 0  # the slot remember() writes next (the oldest one)
        self._last_seq = -1
        # the blocks witnessed: height, hash, prev (if known)
        self._heights = array("Q", bytes(8 * _BLOCKS))
        self._blocks = bytearray(_HASH * _BLOCKS)
        self._prevs = bytearray(_HASH * _BLOCKS)
        self._prev_known = bytearray(_BLOCKS)
        self._block_count = 0
        self._top = -1  # the highest height witnessed

    # -- our entries ------------------------------------------------------------

    def remember(self, seq, signed_bytes):
        # seq: of a READING or ORDER we signed (other types are no entries);
        # seqs come in increasing order, as the signer numbers them.
        if not _int(seq, messages.U64):
            raise WitnessError("arg", "seq out of range")
        if seq <= self._last_seq:
            raise WitnessError("arg", "seq %d after %d" % (seq, self._last_seq))
        i = self._next
        self._seqs[i] = seq
        self._hashes[i * _HASH:(i + 1) * _HASH] = merkle.leaf_hash(signed_bytes)
        self._state[i] = _SIGNED
        self._next = (i + 1) % self.keep
        self._last_seq = seq

    def _oldest_seq(self):
        # -1 when nothing is remembered
        i = self._next
        if self._state[i] == _EMPTY:
            return self._seqs[0] if self._state[0] != _EMPTY else -1
        return self._seqs[i]

    def _slot(self, seq):
        # newest first: proofs are mostly about recent entries
        keep = self.keep
        i = self._next
        for _ in range(keep):
            i = i - 1 if i else keep - 1
            if self._state[i] == _EMPTY:
                return -1
            if self._seqs[i] == seq:
                return i
        return -1

    def _leaf(self, i):
        return bytes(self._hashes[i * _HASH:(i + 1) * _HASH])

    # -- the chain -------------------------------------------------------------

    def _block_slot(self, height):
        for i in range(self._block_count):
            if self._heights[i] == height:
                return i
        return -1

    def _block_hash(self, i):
        return bytes(self._blocks[i * _HASH:(i + 1) * _HASH])

    def _note_block(self, height, block_hash, prev):
        # prev None: not known (a block restored after a reboot)
        if self._block_slot(height) >= 0:
            return
        i = self._block_count
        if i < _BLOCKS:
            self._block_count = i + 1
        else:
            i = self._lowest_slot()  # the lowest height makes room
        self._heights[i] = height
        self._blocks[i * _HASH:(i + 1) * _HASH] = block_hash
        self._prev_known[i] = prev is not None
        if prev is not None:
            self._prevs[i * _HASH:(i + 1) * _HASH] = prev
        if height > self._top:
            self._top = height

    def _lowest_slot(self):
        low = 0
        for i in range(1, self._block_count):
            if self._heights[i] < self._heights[low]:
                low = i
        return low

    def last_block(self):
        """(height, block hash) of the highest block witnessed, or None:
        what the firmware persists to keep the chain across a reboot."""
        if self._top < 0:
            return None
        return self._top, self._block_hash(self._block_slot(self._top))

    def restore_block(self, height, block_hash):
        # the persisted last_block() after a reboot
        if not _int(height, messages.U64) or not isinstance(block_hash, bytes) or len(block_hash) != _HASH:
            raise WitnessError("arg", "height and a 32-byte hash")
        self._note_block(height, block_hash, None)

    def _check_chain(self, height, prev, block_hash):
        # -> True if prev was checked against the block witnessed below
        i = self._block_slot(height)
        if i >= 0:
            if self._block_hash(i) != block_hash:
                raise WitnessError("fork", "another block of height %d was witnessed" % height)
            return self._block_slot(height - 1) >= 0 if height else False
        if self._block_count == _BLOCKS and height < self._heights[self._lowest_slot()]:
            raise WitnessError("stale", "height %d is below the %d heights remembered" % (height, _BLOCKS))
        linked = False
        if height:
            i = self._block_slot(height - 1)
            if i >= 0:
                if self._block_hash(i) != prev:
                    raise WitnessError("chain", "prev is not block %d as witnessed" % (height - 1))
                linked = True
        i = self._block_slot(height + 1)
        if i >= 0 and self._prev_known[i] and bytes(self._prevs[i * _HASH:(i + 1) * _HASH]) != block_hash:
            raise WitnessError("chain", "block %d as witnessed does not follow this one" % (height + 1))
        return linked

    # -- the request -------------------------------------------------------------

    def check(self, request, now_s):
        """Check a witness request -> Witnessed, or raise WitnessError.
        Nothing is recorded unless every check passed."""
        block_bytes, proofs = decode_request(request)
        try:
            msg = messages.open_signed(block_bytes, self._lookup)
        except messages.ProtocolError as e:
            reason = e.reason
            if reason in ("kid", "key", "alg", "signature"):
                reason = "signature"
            elif reason != "size":
                reason = "malformed"
            raise WitnessError(reason, "block: " + str(e))
        if msg.type != messages.BLOCK:
            raise WitnessError("malformed", "a %s, not a block" % msg.name)
        try:
            replay.check_time(msg.ts, now_s, late_ok=True)
        except replay.ReplayError as e:
            raise WitnessError("future", str(e))
        height = msg["height"]
        root = msg["root"]
        size = msg["entries"]
        block_hash = hashlib.sha256(block_bytes).digest()
        linked = self._check_chain(height, msg["prev"], block_hash)

        oldest = self._oldest_seq()
        proven = []
        slots = []
        unchecked = []
        for seq, index, path in proofs:
            if seq in proven or seq in unchecked:
                raise WitnessError("duplicate", "seq %d is proven twice" % seq)
            if oldest < 0 or seq < oldest:
                unchecked.append(seq)
                continue
            i = self._slot(seq)
            if i < 0:
                raise WitnessError("unknown_entry", "seq %d is none of our entries" % seq)
            if index >= size:
                raise WitnessError("proof", "index %d in a block of %d entries" % (index, size))
            try:
                ok = merkle.verify(self._leaf(i), index, size, path, root)
            except merkle.MerkleError as e:
                raise WitnessError("proof", "seq %d: %s" % (seq, e))
            if not ok:
                raise WitnessError("proof", "seq %d is not entry %d of the block" % (seq, index))
            proven.append(seq)
            slots.append(i)

        for i in slots:
            self._state[i] = _PROVEN
        self._note_block(height, block_hash, msg["prev"])
        missing = []
        if proven:
            top = max(proven)
            keep = self.keep
            i = self._next
            for _ in range(keep):  # oldest first
                if self._state[i] == _SIGNED and self._seqs[i] < top:
                    missing.append(self._seqs[i])
                i = i + 1 if i + 1 < keep else 0
        return Witnessed(height, block_hash, proven, unchecked, missing, linked)
