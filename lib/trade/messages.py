# The trade protocol's messages (docs/protocol.md): each is a COSE_Sign1
# (lib/cose.py, ES256) whose payload is a CBOR array
#
#     [version, type, seq, ts, field, field, ...]
#
# version 1; type one of the numbers below; seq the sender's monotonic
# sequence number; ts unix seconds (UTC). The fields of each type follow in a
# fixed order. Integers only: energy in Wh, power in W, current in mA,
# prices in micro-units of the community's currency per kWh, money in
# micro-units. A reader ignores elements after the ones it knows (newer
# minor additions) and rejects unknown types, so fields are only ever
# appended. Intervals are whole minutes (15 encodes in one byte, 900 s in
# three: a READING must fit 128 bytes).

import cbor
from compat import const
import cose

_VERSION = const(1)

READING = 1
ORDER = 2
TRADE = 3
SETTLEMENT = 4
BLOCK = 5
WITNESS = 6
COMMAND = 7
ACK = 8
OTA = 9

U64 = 0xFFFFFFFFFFFFFFFF

# One line per type (from 1): name, signed size budget in bytes
# (docs/protocol.md explains them), then the fields in order as
# name:kind:lo:hi. Kinds: i an int in [lo, hi]; b a byte string of lo..hi
# bytes; t text of lo..hi UTF-8 bytes; s a list of lo..hi [price, wh] pairs
# (each 0..u32). Bounds: decimal, uN/iN the largest unsigned/signed N-bit
# int, -iN the smallest. A trailing "?" on a name: optional (may be absent at
# the end, or null). One string, not tuples: it stays in ROM on a board, and
# a message parses only its own line.
_SPEC = const(
    "\n"
    # READING: the interval [ts - 60 * interval_min, ts), the energy the
    # meter counted in it, its registers at ts, power at ts, the meter's serial
    "reading 160 interval_min:i:1:1440 import_wh:i:0:u32 export_wh:i:0:u32 import_register_wh:i:0:u64"
    " export_register_wh:i:0:u64 power_w:i:-i32:i32 meter:b:1:32\n"
    # ORDER: side 0 buy, 1 sell; a limit price, or a price-quantity curve
    "order 192 interval_start:i:0:u64 interval_min:i:1:1440 side:i:0:1 energy_wh:i:1:u32"
    " limit_price:i:0:u32 steps?:s:1:8\n"
    # TRADE: hub to both parties
    "trade 160 trade_id:i:0:u64 interval_start:i:0:u64 interval_min:i:1:1440 seller:b:8:8 buyer:b:8:8"
    " energy_wh:i:1:u32 price:i:0:u32 seller_order:i:0:u64 buyer_order:i:0:u64\n"
    # SETTLEMENT: what was delivered and what the buyer owes the seller;
    # status 0 settled in full, 1 partial (shortfall), 2 failed
    "settlement 128 trade_id:i:0:u64 delivered_wh:i:0:u32 amount:i:-i64:i64 status:i:0:2\n"
    # BLOCK header: entries' Merkle root, chained by the previous block's hash
    "block 192 height:i:0:u64 prev:b:32:32 root:b:32:32 entries:i:0:u32\n"
    # WITNESS: a device's signature over a block: the hash of its signed BLOCK message
    "witness 160 height:i:0:u64 block:b:32:32\n"
    # COMMAND: hub to one device, valid in [valid_from, valid_until);
    # action 0 setpoint (battery W, + charges; EV charger mA), 1 relay
    # (value 0 open, 1 closed), 2 demand response (import limit, W)
    "command 160 target:b:8:8 valid_from:i:0:u64 valid_until:i:0:u64 action:i:0:2 actuator:i:0:15"
    " value:i:-i32:i32\n"
    # ACK: the hub has the device's message with sequence number acked_seq
    "ack 128 device:b:8:8 acked_seq:i:0:u64\n"
    # OTA: an update announcement; the image itself is checked against sha256
    "ota 256 version:t:1:16 size:i:1:u32 sha256:b:32:32 url?:t:1:128\n"
)

MAX_MESSAGE = 512  # the most any receiver accepts


class ProtocolError(ValueError):
    # reason: "size", "cbor", "version", "type", "missing", "field", plus
    # those of cose.CoseError ("format", "alg", "kid", "key", "signature")
    def __init__(self, reason, detail=""):
        super().__init__("%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason


class Message:
    """A decoded message: type, version, seq, ts, fields (dict by name), and
    kid (the signer, when it came through open())."""

    def __init__(self, mtype, seq, ts, fields, version=_VERSION, kid=None):
        self.type = mtype
        self.version = version
        self.seq = seq
        self.ts = ts
        self.fields = fields
        self.kid = kid

    @property
    def name(self):
        line = _line(self.type)
        return line[:line.find(" ")]

    def __getitem__(self, name):
        return self.fields[name]

    def __repr__(self):
        return "<%s seq %d ts %d %r>" % (self.name, self.seq, self.ts, self.fields)


def _line(mtype):
    # type mtype's line of _SPEC; "" for an unknown type (line 0 is empty)
    i = -1
    for _ in range(mtype):
        i = _SPEC.find("\n", i + 1)
        if i < 0:
            return ""
    return _SPEC[i + 1:_SPEC.find("\n", i + 1)]


def _bound(b):
    # a bound of _SPEC -> int, made on use (u32 and wider are bignums on a board)
    if b[0] == "u":
        return (1 << int(b[1:])) - 1
    if b[0] == "i":
        return (1 << int(b[1:]) - 1) - 1
    if b[0] == "-":
        return -1 - _bound(b[1:])
    return int(b)


def _int(v, lo, hi):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _check(name, kind, lo, hi, v):
    lo = _bound(lo)
    hi = _bound(hi)
    if kind == "i":
        ok = _int(v, lo, hi)
    elif kind == "b":
        ok = isinstance(v, bytes) and lo <= len(v) <= hi
    elif kind == "t":
        ok = isinstance(v, str) and lo <= len(v.encode()) <= hi
    else:  # s: steps
        ok = isinstance(v, list) and lo <= len(v) <= hi
        if ok:
            top = _bound("u32")
            for step in v:
                if not (isinstance(step, list) and len(step) == 2 and
                        _int(step[0], 0, top) and _int(step[1], 0, top)):
                    ok = False
                    break
    if not ok:
        raise ProtocolError("field", "%s: %r out of range or of the wrong type" % (name, v))


def _spec(mtype, seq, ts):
    # checks the head -> [name, budget, field, ...], each field "name:kind:lo:hi"
    if not isinstance(mtype, int) or isinstance(mtype, bool) or not 1 <= mtype <= OTA:
        raise ProtocolError("type", "unknown message type %r" % (mtype,))
    _check("seq", "i", "0", "u64", seq)
    _check("ts", "i", "0", "u64", ts)
    return _line(mtype).split(" ")


def encode(mtype, seq, ts, fields):
    """The payload bytes of a message; fields: dict by name (optional ones may be left out)."""
    spec = _spec(mtype, seq, ts)
    out = [_VERSION, mtype, seq, ts]
    missing = 0
    for i in range(2, len(spec)):
        name, kind, lo, hi = spec[i].split(":")
        optional = name[-1] == "?"
        if optional:
            name = name[:-1]
        v = fields.get(name)
        if v is None:
            if not optional:
                raise ProtocolError("missing", "%s needs %s" % (spec[0], name))
            missing += 1
            continue
        if missing:
            out.extend([None] * missing)  # an optional field before this one
            missing = 0
        _check(name, kind, lo, hi, v)
        out.append(v)
    return cbor.dumps(out)


def decode(payload):
    """Payload bytes -> Message (kid None). Unknown trailing elements are ignored."""
    try:
        a = cbor.loads(payload, 4, 64)
    except cbor.CborError as e:
        raise ProtocolError("cbor", str(e))
    if not isinstance(a, list) or len(a) < 4:
        raise ProtocolError("missing", "not a [version, type, seq, ts, ...] array")
    version, mtype, seq, ts = a[0], a[1], a[2], a[3]
    if version != _VERSION:
        raise ProtocolError("version", "version %r, this reader speaks %d" % (version, _VERSION))
    spec = _spec(mtype, seq, ts)
    fields = {}
    for i in range(2, len(spec)):
        name, kind, lo, hi = spec[i].split(":")
        optional = name[-1] == "?"
        if optional:
            name = name[:-1]
        v = a[i + 2] if i + 2 < len(a) else None  # spec[2] is a[4]
        if v is None:
            if not optional:
                raise ProtocolError("missing", "%s has no %s" % (spec[0], name))
            continue
        _check(name, kind, lo, hi, v)
        fields[name] = v
    return Message(mtype, seq, ts, fields, version)


def sign(mtype, seq, ts, fields, kid, signer):
    """Encode and sign a message -> COSE_Sign1 bytes, within the type's budget."""
    data = cose.sign1(encode(mtype, seq, ts, fields), kid, signer)
    spec = _spec(mtype, seq, ts)
    if len(data) > int(spec[1]):
        raise ProtocolError("size", "%s is %d bytes, the budget is %s" % (spec[0], len(data), spec[1]))
    return data


def open_signed(data, lookup):
    """Verify and decode a signed message -> Message with .kid set.
    lookup(kid) -> (x, y) public key or None."""
    if len(data) > MAX_MESSAGE:
        raise ProtocolError("size", "%d bytes, at most %d" % (len(data), MAX_MESSAGE))
    try:
        kid, payload = cose.verify1(data, lookup)
    except cose.CoseError as e:
        raise ProtocolError(e.reason, str(e))
    m = decode(payload)
    m.kid = kid
    return m
