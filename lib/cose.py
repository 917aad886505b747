# COSE (RFC 9052/9053) as the trade protocol uses it: COSE_Sign1 with ES256
# (ECDSA P-256, SHA-256, signature raw r||s) and EC2 COSE_Keys.
#
# A message is the tagged array 18([protected, unprotected, payload,
# signature]). Our signers put alg (-7) and kid in the protected header, so
# both are signed; a verifier also accepts kid in the unprotected header, as
# RFC 9052 allows, but alg must be protected (no algorithm substitution).
#
# Keys are found by kid through a `lookup(kid) -> (x, y) or None` callable:
# the caller decides which devices it trusts.

import hashlib

import cbor
from compat import const
import p256

_ALG_ES256 = const(-7)
_KTY_EC2 = const(2)
_CRV_P256 = const(1)
_TAG_SIGN1 = const(18)
_H_ALG = const(1)
_H_KID = const(4)
# COSE_Key labels
_K_KTY = const(1)
_K_KID = const(2)
_K_ALG = const(3)
_K_CRV = const(-1)
_K_X = const(-2)
_K_Y = const(-3)

_MAX_MESSAGE = const(1024)  # larger input is refused before it is decoded


class CoseError(ValueError):
    # reason: "size", "cbor", "format", "alg", "kid", "key", "signature"
    def __init__(self, reason, detail=""):
        super().__init__("%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason


def device_id(x, y):
    """The kid of a device: the first 8 bytes of SHA-256 over its public
    key, uncompressed (0x04||X||Y), so anyone can check that a kid and a
    key belong together."""
    return hashlib.sha256(p256.encode_point(x, y)).digest()[:8]


def _protected(kid):
    return cbor.dumps({_H_ALG: _ALG_ES256, _H_KID: kid})


def _to_be_signed(protected, payload, external_aad=b""):
    # Sig_structure for COSE_Sign1 (RFC 9052 section 4.4)
    return cbor.dumps(["Signature1", protected, external_aad, payload])


def sign1(payload, kid, signer, external_aad=b""):
    """COSE_Sign1 over payload bytes -> the tagged message bytes.
    signer: anything with sign_digest(32-byte SHA-256 digest) -> r||s."""
    protected = _protected(kid)
    digest = hashlib.sha256(_to_be_signed(protected, payload, external_aad)).digest()
    sig = signer.sign_digest(digest)
    return cbor.dumps(cbor.Tag(_TAG_SIGN1, [protected, {}, payload, sig]))


def _bstr(v, what):
    if not isinstance(v, bytes):
        raise CoseError("format", "%s is not a byte string" % what)
    return v


def decode1(data):
    """Parse a COSE_Sign1 without checking its signature -> (kid, protected
    bytes, payload, signature). Hostile input gives CoseError only."""
    if len(data) > _MAX_MESSAGE:
        raise CoseError("size", "%d bytes, at most %d" % (len(data), _MAX_MESSAGE))
    try:
        msg = cbor.loads(data, 4, 64)
    except cbor.CborError as e:
        raise CoseError("cbor", str(e))
    # tagged, always: one form per message, and what pycose and others expect
    if not isinstance(msg, cbor.Tag):
        raise CoseError("format", "not tagged as COSE_Sign1 (18)")
    if msg.tag != _TAG_SIGN1:
        raise CoseError("format", "tag %d, not COSE_Sign1 (18)" % msg.tag)
    msg = msg.value
    if not isinstance(msg, list) or len(msg) != 4:
        raise CoseError("format", "not a 4-element COSE_Sign1 array")
    protected = _bstr(msg[0], "protected header")
    unprotected = msg[1]
    payload = _bstr(msg[2], "payload")
    sig = _bstr(msg[3], "signature")
    if not isinstance(unprotected, dict):
        raise CoseError("format", "unprotected header is not a map")
    try:
        prot = cbor.loads(protected, 2, 16) if protected else {}
    except cbor.CborError as e:
        raise CoseError("cbor", "protected header: %s" % e)
    if not isinstance(prot, dict):
        raise CoseError("format", "protected header is not a map")
    if prot.get(_H_ALG) != _ALG_ES256:
        raise CoseError("alg", "alg %r, expected ES256 (-7) in the protected header" % (prot.get(_H_ALG),))
    if _H_ALG in unprotected:
        raise CoseError("alg", "alg in the unprotected header")
    kid = prot.get(_H_KID, unprotected.get(_H_KID))
    if not isinstance(kid, bytes) or not kid:
        raise CoseError("kid", "no kid")
    if _H_KID in prot and _H_KID in unprotected:
        raise CoseError("kid", "kid in both headers")
    return kid, protected, payload, sig


def verify1(data, lookup, external_aad=b""):
    """Check a COSE_Sign1 message -> (kid, payload). lookup(kid) returns the
    signer's public key (x, y), or None for a kid this receiver does not know."""
    kid, protected, payload, sig = decode1(data)
    pub = lookup(kid)
    if pub is None:
        raise CoseError("kid", "unknown kid %s" % kid.hex())
    digest = hashlib.sha256(_to_be_signed(protected, payload, external_aad)).digest()
    try:
        p256.verify_digest(pub, digest, sig)
    except p256.SignatureError as e:
        raise CoseError("signature", e.reason)
    return kid, payload


# ---- COSE_Key (EC2, P-256) ----


def encode_key(x, y, kid=None):
    """The public key as a COSE_Key map (deterministic bytes); kid defaults
    to device_id(x, y)."""
    if kid is None:
        kid = device_id(x, y)
    return cbor.dumps({_K_KTY: _KTY_EC2, _K_KID: kid, _K_ALG: _ALG_ES256, _K_CRV: _CRV_P256,
                       _K_X: x.to_bytes(32, "big"), _K_Y: y.to_bytes(32, "big")})


def decode_key(data):
    """COSE_Key bytes -> (kid, (x, y)). The point must be on P-256; kid, if
    absent, is derived from the key."""
    try:
        m = cbor.loads(data, 2, 32)
    except cbor.CborError as e:
        raise CoseError("cbor", str(e))
    if not isinstance(m, dict):
        raise CoseError("key", "not a map")
    if m.get(_K_KTY) != _KTY_EC2 or m.get(_K_CRV) != _CRV_P256:
        raise CoseError("key", "not an EC2 P-256 key")
    if m.get(_K_ALG, _ALG_ES256) != _ALG_ES256:
        raise CoseError("alg", "key for alg %r" % (m.get(_K_ALG),))
    xb, yb = m.get(_K_X), m.get(_K_Y)
    if not isinstance(xb, bytes) or not isinstance(yb, bytes) or len(xb) != 32 or len(yb) != 32:
        raise CoseError("key", "x and y must be 32-byte strings")
    x, y = int.from_bytes(xb, "big"), int.from_bytes(yb, "big")
    try:
        p256.check_public(x, y)
    except p256.SignatureError as e:
        raise CoseError("key", "public key: %s" % e.reason)
    kid = m.get(_K_KID)
    if kid is None:
        kid = device_id(x, y)
    elif not isinstance(kid, bytes) or not kid:
        raise CoseError("kid", "kid must be a non-empty byte string")
    return kid, (x, y)
