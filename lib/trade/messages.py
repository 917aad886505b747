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
_OTA = const(9)

_NAMES = const(("", "reading", "order", "trade", "settlement", "block", "witness", "command", "ack", "ota"))

_U32 = const(0xFFFFFFFF)
U64 = 0xFFFFFFFFFFFFFFFF
_I32 = const(0x7FFFFFFF)
_I64 = const(0x7FFFFFFFFFFFFFFF)

# Field kinds: ("int", lo, hi) int in range; ("b", lo, hi) byte string of that
# length; ("t", lo, hi) text of that many UTF-8 bytes; ("steps", max) a list
# of [price, wh] pairs. A trailing "?" on a name: optional (may be absent at
# the end, or null).
_KID = const(("b", 8, 8))
_HASH = const(("b", 32, 32))
_TS = ("int", 0, U64)
FIELDS = (
    None,
    # READING: the interval [ts - 60 * interval_min, ts), the energy the
    # meter counted in it, its registers at ts, power at ts, the meter's serial
    (("interval_min", ("int", 1, 1440)), ("import_wh", ("int", 0, _U32)), ("export_wh", ("int", 0, _U32)),
     ("import_register_wh", ("int", 0, U64)), ("export_register_wh", ("int", 0, U64)),
     ("power_w", ("int", -_I32 - 1, _I32)), ("meter", ("b", 1, 32))),
    # ORDER: side 0 buy, 1 sell; a limit price, or a price-quantity curve
    (("interval_start", _TS), ("interval_min", ("int", 1, 1440)), ("side", ("int", 0, 1)),
     ("energy_wh", ("int", 1, _U32)), ("limit_price", ("int", 0, _U32)), ("steps?", ("steps", 8))),
    # TRADE: hub to both parties
    (("trade_id", ("int", 0, U64)), ("interval_start", _TS), ("interval_min", ("int", 1, 1440)),
     ("seller", _KID), ("buyer", _KID), ("energy_wh", ("int", 1, _U32)), ("price", ("int", 0, _U32)),
     ("seller_order", ("int", 0, U64)), ("buyer_order", ("int", 0, U64))),
    # SETTLEMENT: what was delivered and what the buyer owes the seller;
    # status 0 settled in full, 1 partial (shortfall), 2 failed
    (("trade_id", ("int", 0, U64)), ("delivered_wh", ("int", 0, _U32)), ("amount", ("int", -_I64 - 1, _I64)),
     ("status", ("int", 0, 2))),
    # BLOCK header: entries' Merkle root, chained by the previous block's hash
    (("height", ("int", 0, U64)), ("prev", _HASH), ("root", _HASH), ("entries", ("int", 0, _U32))),
    # WITNESS: a device's signature over a block: the hash of its signed BLOCK message
    (("height", ("int", 0, U64)), ("block", _HASH)),
    # COMMAND: hub to one device, valid in [valid_from, valid_until);
    # action 0 setpoint (battery W, + charges; EV charger mA), 1 relay
    # (value 0 open, 1 closed), 2 demand response (import limit, W)
    (("target", _KID), ("valid_from", _TS), ("valid_until", _TS), ("action", ("int", 0, 2)),
     ("actuator", ("int", 0, 15)), ("value", ("int", -_I32 - 1, _I32))),
    # ACK: the hub has the device's message with sequence number acked_seq
    (("device", _KID), ("acked_seq", ("int", 0, U64))),
    # OTA: an update announcement; the image itself is checked against sha256
    (("version", ("t", 1, 16)), ("size", ("int", 1, _U32)), ("sha256", _HASH), ("url?", ("t", 1, 128))),
)

# Signed size budgets (bytes), enforced when signing; docs/protocol.md explains them.
_BUDGET = const((0, 160, 192, 160, 128, 192, 160, 160, 128, 256))
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
        return _NAMES[self.type]

    def __getitem__(self, name):
        return self.fields[name]

    def __repr__(self):
        return "<%s seq %d ts %d %r>" % (self.name, self.seq, self.ts, self.fields)


def _check(name, kind, v):
    k = kind[0]
    if k == "int":
        ok = isinstance(v, int) and not isinstance(v, bool) and kind[1] <= v <= kind[2]
    elif k == "b":
        ok = isinstance(v, bytes) and kind[1] <= len(v) <= kind[2]
    elif k == "t":
        ok = isinstance(v, str) and kind[1] <= len(v.encode()) <= kind[2]
    else:  # steps
        ok = isinstance(v, list) and 1 <= len(v) <= kind[1]
        if ok:
            for step in v:
                if not (isinstance(step, list) and len(step) == 2 and
                        all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= _U32 for n in step)):
                    ok = False
                    break
    if not ok:
        raise ProtocolError("field", "%s: %r out of range or of the wrong type" % (name, v))


def _spec(mtype):
    if not isinstance(mtype, int) or isinstance(mtype, bool) or not 1 <= mtype < len(FIELDS):
        raise ProtocolError("type", "unknown message type %r" % (mtype,))
    return FIELDS[mtype]


def encode(mtype, seq, ts, fields):
    """The payload bytes of a message; fields: dict by name (optional ones may be left out)."""
    spec = _spec(mtype)
    _check("seq", ("int", 0, U64), seq)
    _check("ts", _TS, ts)
    out = [_VERSION, mtype, seq, ts]
    missing = 0
    for name, kind in spec:
        optional = name[-1] == "?"
        name = name.rstrip("?")
        v = fields.get(name)
        if v is None:
            if not optional:
                raise ProtocolError("missing", "%s needs %s" % (_NAMES[mtype], name))
            missing += 1
            continue
        if missing:
            out.extend([None] * missing)  # an optional field before this one
            missing = 0
        _check(name, kind, v)
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
    spec = _spec(mtype)
    _check("seq", ("int", 0, U64), seq)
    _check("ts", _TS, ts)
    fields = {}
    for i in range(len(spec)):
        name, kind = spec[i]
        optional = name[-1] == "?"
        name = name.rstrip("?")
        v = a[4 + i] if 4 + i < len(a) else None
        if v is None:
            if not optional:
                raise ProtocolError("missing", "%s has no %s" % (_NAMES[mtype], name))
            continue
        _check(name, kind, v)
        fields[name] = v
    return Message(mtype, seq, ts, fields, version)


def sign(mtype, seq, ts, fields, kid, signer):
    """Encode and sign a message -> COSE_Sign1 bytes, within the type's budget."""
    data = cose.sign1(encode(mtype, seq, ts, fields), kid, signer)
    if len(data) > _BUDGET[mtype]:
        raise ProtocolError("size", "%s is %d bytes, the budget is %d" % (_NAMES[mtype], len(data), _BUDGET[mtype]))
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
