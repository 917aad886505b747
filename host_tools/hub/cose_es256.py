"""COSE_Sign1 with ES256 (RFC 9052/9053) on cbor2 and cryptography: the
hub's own signing key, and checking what the devices sign."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from pathlib import Path

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (decode_dss_signature, encode_dss_signature)

MAX_MESSAGE = 512
TAG_SIGN1 = 18


class Rejected(ValueError):
    """A message the hub refuses; reason is a short machine-readable word."""

    def __init__(self, reason, detail=""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def kid_of(public_key: ec.EllipticCurvePublicKey) -> bytes:
    point = public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return hashlib.sha256(point).digest()[:8]


def encode_cose_key(public_key) -> bytes:
    n = public_key.public_numbers()
    kid = kid_of(public_key)
    return cbor2.dumps({1: 2, 2: kid, 3: -7, -1: 1, -2: n.x.to_bytes(32, "big"), -3: n.y.to_bytes(32, "big")},
                       canonical=True)


def decode_cose_key(data: bytes):
    """-> (kid, public key); the point must be on P-256 and the kid its hash."""
    try:
        k = cbor2.loads(data)
        if not isinstance(k, Mapping):
            raise Rejected("key", "not a map")
        if k.get(1) != 2 or k.get(-1) != 1 or k.get(3, -7) != -7:
            raise Rejected("key", "not an EC2 P-256 ES256 COSE_Key")
        x, y = k[-2], k[-3]
        pub = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                                            ec.SECP256R1()).public_key()
    except Rejected:
        raise
    except Exception as e:  # cbor2 and cryptography raise many kinds
        raise Rejected("key", f"{type(e).__name__}: {e}") from None
    kid = kid_of(pub)
    if k.get(2, kid) != kid:
        raise Rejected("key", "kid does not match the key")
    return kid, pub


def _tbs(protected: bytes, payload: bytes, aad: bytes = b"") -> bytes:
    return cbor2.dumps(["Signature1", protected, aad, payload])


def sign1(private_key, payload: bytes, aad: bytes = b"") -> bytes:
    """A COSE_Sign1 (ES256, kid from the key, both protected) of `payload`,
    with `aad` as the external_aad (RFC 9052 section 4.4)."""
    protected = cbor2.dumps({1: -7, 4: kid_of(private_key.public_key())}, canonical=True)
    r, s = decode_dss_signature(private_key.sign(_tbs(protected, payload, aad), ec.ECDSA(hashes.SHA256())))
    return cbor2.dumps(cbor2.CBORTag(TAG_SIGN1, [protected, {}, payload, r.to_bytes(32, "big") + s.to_bytes(32, "big")]))


class HubKey:
    """The hub's ES256 key, kept as PEM in the hub's state directory."""

    def __init__(self, private_key):
        self.private_key = private_key
        self.public_key = private_key.public_key()
        self.kid = kid_of(self.public_key)

    @classmethod
    def load_or_create(cls, path: Path) -> "HubKey":
        path = Path(path)
        if path.exists():
            return cls(serialization.load_pem_private_key(path.read_bytes(), None))
        key = ec.generate_private_key(ec.SECP256R1())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
        tmp.chmod(0o600)
        tmp.replace(path)
        return cls(key)

    def cose_key(self) -> bytes:
        return encode_cose_key(self.public_key)

    def sign1(self, payload: bytes) -> bytes:
        return sign1(self.private_key, payload)


def loads_exact(data: bytes):
    """One CBOR item that is all of `data`: cbor2.loads ignores what follows
    the first item, and bytes appended to a signed message would otherwise
    be stored (and later fail to prove in a block) with a valid signature."""
    fp = io.BytesIO(data)
    item = cbor2.CBORDecoder(fp).decode()
    if fp.tell() != len(data):
        raise ValueError(f"{len(data) - fp.tell()} bytes after the CBOR item")
    return item


def open_sign1(data: bytes, max_size: int = MAX_MESSAGE):
    """The structure of a COSE_Sign1, not its signature -> (signer kid,
    protected, payload, signature): tagged, four elements, ES256 and an
    8-byte kid in the protected header, nothing after the item."""
    if len(data) > max_size:
        raise Rejected("size", f"{len(data)} bytes, at most {max_size}")
    try:
        msg = loads_exact(data)
    except Exception as e:  # cbor2 raises many kinds
        raise Rejected("cbor", f"{type(e).__name__}: {e}") from None
    if not isinstance(msg, cbor2.CBORTag) or msg.tag != TAG_SIGN1:
        raise Rejected("format", "not a tagged COSE_Sign1")
    v = msg.value
    if (not isinstance(v, (list, tuple)) or len(v) != 4 or not all(isinstance(v[i], bytes) for i in (0, 2, 3))
            or not isinstance(v[1], Mapping)):
        raise Rejected("format", "not a 4-element COSE_Sign1")
    try:
        prot = loads_exact(v[0])
    except Exception:
        raise Rejected("cbor", "protected header") from None
    if not isinstance(prot, Mapping) or prot.get(1) != -7:
        raise Rejected("alg", "not ES256 in the protected header")
    kid = prot.get(4)
    if not isinstance(kid, bytes) or len(kid) != 8:
        raise Rejected("kid", "no 8-byte kid in the protected header")
    return kid, v[0], v[2], v[3]


def check_signature(public_key, protected: bytes, payload: bytes, sig: bytes, aad: bytes = b""):
    if len(sig) != 64:
        raise Rejected("signature", "not 64 bytes")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        public_key.verify(der, _tbs(protected, payload, aad), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Rejected("signature", "does not verify") from None


def verify1(data: bytes, lookup):
    """Check a COSE_Sign1 -> (kid, payload bytes). lookup(kid) -> public key or None."""
    kid, protected, payload, sig = open_sign1(data)
    pub = lookup(kid)
    if pub is None:
        raise Rejected("unknown_key", kid.hex())
    check_signature(pub, protected, payload, sig)
    return kid, payload
