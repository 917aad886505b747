# The trade protocol's test vectors: fixed keys and one message of each type,
# and a reader for the vectors printed in docs/protocol.md. Run on CPython,
#     PYTHONPATH=lib:tests/lib .venv/bin/python tests/lib/protocol_vectors.py
# prints that section of the document from these inputs.
import hashlib

import p256
from trade import messages as m


def _key(label):
    return int.from_bytes(hashlib.sha256(label).digest(), "big") % (p256.N - 1) + 1


DEVICE_D = _key(b"pgw protocol test vector: device")
BUYER_D = _key(b"pgw protocol test vector: buyer")
HUB_D = _key(b"pgw protocol test vector: hub")

# Signed size budgets by message type (docs/protocol.md); trade.messages' are const().
BUDGET = (0, 160, 192, 160, 128, 192, 160, 160, 128, 256)
OTA = 9  # the OTA message type, private in trade.messages


class Signer:
    """A test key as a key provider: public key, kid, sign_digest()."""

    def __init__(self, d):
        import cose

        self.d = d
        self.pub = p256.public_key(d)
        self.kid = cose.device_id(*self.pub)

    def sign_digest(self, digest):
        return p256.sign_digest(self.d, digest)


def _kid(d):
    return Signer(d).kid


def _sha(text):
    return hashlib.sha256(text).digest()


def vectors():
    dev, buyer = _kid(DEVICE_D), _kid(BUYER_D)
    block = {"height": 12, "prev": _sha(b"block 11"), "root": _sha(b"entries of block 12"), "entries": 5}
    block_hash = _sha(m.encode(m.BLOCK, 79, 1750503600, block))
    return [
        # name, type, signer, seq, ts, fields
        ("reading", m.READING, "device", 1042, 1750500000,
         {"interval_min": 15, "import_wh": 412, "export_wh": 1630, "import_register_wh": 12345678,
          "export_register_wh": 8765432, "power_w": -4210, "meter": b"12345678"}),
        ("order", m.ORDER, "device", 1043, 1750500030,
         {"interval_start": 1750501800, "interval_min": 15, "side": 1, "energy_wh": 1500,
          "limit_price": 180000, "steps": [[150000, 500], [180000, 1000]]}),
        ("trade", m.TRADE, "hub", 77, 1750501500,
         {"trade_id": 9001, "interval_start": 1750501800, "interval_min": 15, "seller": dev, "buyer": buyer,
          "energy_wh": 1200, "price": 165000, "seller_order": 1043, "buyer_order": 318}),
        ("settlement", m.SETTLEMENT, "hub", 78, 1750503000,
         {"trade_id": 9001, "delivered_wh": 1200, "amount": 198000, "status": 0}),
        ("block", m.BLOCK, "hub", 79, 1750503600, block),
        ("witness", m.WITNESS, "device", 1044, 1750503610, {"height": 12, "block": block_hash}),
        ("command", m.COMMAND, "hub", 80, 1750503700,
         {"target": dev, "valid_from": 1750503700, "valid_until": 1750504600, "action": 0, "actuator": 0,
          "value": -2500}),
        ("ack", m.ACK, "hub", 81, 1750503701, {"device": dev, "acked_seq": 1044}),
        ("ota", OTA, "hub", 82, 1750504000,
         {"version": "0.2.0", "size": 181234, "sha256": _sha(b"pgw firmware 0.2.0 image"), "url": "ota/0.2.0"}),
    ]


VECTORS = vectors()
_KEYS = {"device": DEVICE_D, "hub": HUB_D}


def _doc_path():
    # tests/lib/protocol_vectors.py -> docs/protocol.md
    here = __file__.replace("\\", "/")
    root = here.rsplit("/", 3)[0] if here.count("/") >= 3 else "."
    return root + "/docs/protocol.md"


def doc_vectors(path=None):
    """{name: {"key": bytes, "payload": bytes, "signed": bytes}} from the
    lines `vector NAME`, `key HEX`, `payload HEX`, `signed HEX` of the doc."""
    out = {}
    cur = None
    with open(path or _doc_path()) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 2:
                continue
            if parts[0] == "vector":
                cur = out.setdefault(parts[1], {})
            elif cur is not None and parts[0] in ("key", "payload", "signed"):
                cur[parts[0]] = bytes.fromhex(parts[1])
    return out


def markdown():
    lines = []
    for name, mtype, signer, seq, ts, fields in VECTORS:
        s = Signer(_KEYS[signer])
        payload = m.encode(mtype, seq, ts, fields)
        signed = m.sign(mtype, seq, ts, fields, s.kid, s)
        lines += ["```", "vector %s" % name, "key %s" % s.d.to_bytes(32, "big").hex(),
                  "payload %s" % payload.hex(), "signed %s" % signed.hex(), "```",
                  "%d bytes signed (budget %d); signer: %s, kid %s." % (
                      len(signed), BUDGET[mtype], signer, s.kid.hex()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
