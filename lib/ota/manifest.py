# The OTA manifest (docs/ota.md, "Bundle format"): a COSE_Sign1 (ES256,
# external AAD "pgw-ota-1") by a release key over a CBOR map
#
#   {1 format, 2 seq, 3 version, 4 vendor id, 5 class id, 6 min_prev_seq,
#    7 [[kind, size, sha256], ...], 8 created}
#
# Rules:
# - the signature is checked before a byte of the payload is decoded;
# - the payload is deterministic CBOR (shortest heads, sorted keys) with
#   exactly these eight keys: a field a device does not know is one it would
#   ignore, so a new field needs a new format number;
# - components: the index first, exactly one code component (a ROMFS image
#   or the files), at most one firmware image, each kind once;
# - Policy.check is the device's own judgement: its vendor and class, a seq
#   above the installed one (anti-rollback), the minimum previous seq, the
#   kinds it can install and their sizes;
# - every refusal is an OtaError with a short `reason`.
import hashlib

import cbor
from compat import const
import cose

FORMAT = 1
EXTERNAL_AAD = b"pgw-ota-1"  # a release signature is never a trade message's
MAX_MANIFEST = 1024  # the whole COSE_Sign1, in bytes

KIND_INDEX = 1  # CBOR sequence of [path, size, sha256], sorted by path
KIND_ROMFS = 2  # a ROMFS image holding the indexed files
KIND_FILES = 3  # the indexed files concatenated in index order
KIND_FIRMWARE = 4  # a full MicroPython app image for an ESP32 OTA partition
KIND_NAMES = ("", "index", "romfs", "files", "firmware")

MAX_SEQ = 0xFFFFFFFF
_MAX_VERSION = const(32)  # bytes of the version text
_MAX_COMPONENTS = const(4)

# RFC 9562 section 6.6 (RFC 4122 appendix C): the DNS namespace
NAMESPACE_DNS = b"\x6b\xa7\xb8\x10\x9d\xad\x11\xd1\x80\xb4\x00\xc0\x4f\xd4\x30\xc8"
VENDOR_NAME = "prosumer-gateway.invalid"
# uuid5(NAMESPACE_DNS, VENDOR_NAME) = 59a55ec0-8ed8-5299-8b29-1c2b12bb7f27,
# kept as bytes so that a board does not hash it at every import
VENDOR_ID = b"\x59\xa5\x5e\xc0\x8e\xd8\x52\x99\x8b\x29\x1c\x2b\x12\xbb\x7f\x27"

_K_FORMAT = const(1)
_K_SEQ = const(2)
_K_VERSION = const(3)
_K_VENDOR = const(4)
_K_CLASS = const(5)
_K_MIN_PREV = const(6)
_K_COMPONENTS = const(7)
_K_CREATED = const(8)


class OtaError(ValueError):
    # reason: "size", "cbor", "format", "alg", "kid", "signature", "vendor",
    # "class", "seq", "min_prev", "components", "index", "digest",
    # "truncated", "trailing", "storage"
    def __init__(self, reason, detail=""):
        super().__init__("%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason


def uuid5(namespace, name):
    # RFC 9562 section 5.5: SHA-1 over namespace || name, version 5, variant 10
    u = bytearray(hashlib.sha1(bytes(namespace) + name.encode()).digest()[:16])
    u[6] = (u[6] & 0x0F) | 0x50
    u[8] = (u[8] & 0x3F) | 0x80
    return bytes(u)


def class_id(vendor_id, board_name):
    # The device class of a board file's "board" name, under a vendor
    return uuid5(vendor_id, board_name)


def _uint(v, lo, hi, what):
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise OtaError("format", "%s must be an integer in [%d, %d]" % (what, lo, hi))
    return v


def _bstr(v, n, what):
    if not isinstance(v, bytes) or len(v) != n:
        raise OtaError("format", "%s must be %d bytes" % (what, n))
    return v


class Manifest:
    def __init__(self, seq, version, vendor_id, class_id, min_prev_seq, components, created):
        self.seq = seq
        self.version = version
        self.vendor_id = vendor_id
        self.class_id = class_id
        self.min_prev_seq = min_prev_seq
        self.components = components  # ((kind, size, sha256), ...) in stream order
        self.created = created  # unix seconds
        self.kid = None  # the release key's, once the signature is checked
        self.signed_size = 0  # bytes of the COSE_Sign1 in the stream

    def component(self, kind):
        # -> (size, sha256) of the component of that kind, or None
        for k, size, digest in self.components:
            if k == kind:
                return size, digest
        return None

    def code_kind(self):
        return KIND_ROMFS if self.component(KIND_ROMFS) else KIND_FILES

    def encode(self):
        # The payload bytes; checked by decode(), so a host never signs what
        # a device would refuse as malformed.
        payload = cbor.dumps({
            _K_FORMAT: FORMAT, _K_SEQ: self.seq, _K_VERSION: self.version,
            _K_VENDOR: self.vendor_id, _K_CLASS: self.class_id, _K_MIN_PREV: self.min_prev_seq,
            _K_COMPONENTS: [[k, size, digest] for k, size, digest in self.components],
            _K_CREATED: self.created})
        Manifest.decode(payload)
        return payload

    @classmethod
    def decode(cls, payload):
        try:
            m = cbor.loads(payload, 3, 64, True)
        except cbor.CborError as e:
            raise OtaError("cbor", str(e))
        if not isinstance(m, dict):
            raise OtaError("format", "payload is not a map")
        for k in m:
            if not isinstance(k, int) or not _K_FORMAT <= k <= _K_CREATED:
                raise OtaError("format", "unknown key %r" % (k,))
        if len(m) != _K_CREATED:
            raise OtaError("format", "keys 1..8 are all required")
        if m[_K_FORMAT] != FORMAT or isinstance(m[_K_FORMAT], bool):
            raise OtaError("format", "format %r, this reader knows %d" % (m[_K_FORMAT], FORMAT))
        version = m[_K_VERSION]
        if not isinstance(version, str) or not 0 < len(version.encode()) <= _MAX_VERSION:
            raise OtaError("format", "version must be text of 1..%d bytes" % _MAX_VERSION)
        for c in version:
            if not "!" <= c <= "~":  # printable ASCII: it goes to consoles and logs
                raise OtaError("format", "version must be printable ASCII")
        comps = m[_K_COMPONENTS]
        if not isinstance(comps, list) or not 0 < len(comps) <= _MAX_COMPONENTS:
            raise OtaError("components", "1..%d components" % _MAX_COMPONENTS)
        out = []
        seen = 0
        for c in comps:
            if not isinstance(c, list) or len(c) != 3:
                raise OtaError("components", "a component is [kind, size, sha256]")
            kind = c[0]
            if not isinstance(kind, int) or isinstance(kind, bool) or not KIND_INDEX <= kind <= KIND_FIRMWARE:
                raise OtaError("components", "unknown kind %r" % (kind,))
            if seen & (1 << kind):
                raise OtaError("components", "two %s components" % KIND_NAMES[kind])
            seen |= 1 << kind
            out.append((kind, _uint(c[1], 1, MAX_SEQ, "component size"), _bstr(c[2], 32, "component sha256")))
        if out[0][0] != KIND_INDEX:
            raise OtaError("components", "the index must come first")
        if (seen >> KIND_ROMFS & 1) + (seen >> KIND_FILES & 1) != 1:
            raise OtaError("components", "exactly one of romfs and files")
        return cls(_uint(m[_K_SEQ], 1, MAX_SEQ, "seq"), version,
                   _bstr(m[_K_VENDOR], 16, "vendor id"), _bstr(m[_K_CLASS], 16, "class id"),
                   _uint(m[_K_MIN_PREV], 0, MAX_SEQ, "min_prev_seq"), tuple(out),
                   _uint(m[_K_CREATED], 0, MAX_SEQ, "created"))


def sign(manifest, kid, signer):
    # -> the COSE_Sign1 bytes; signer: sign_digest(sha256 digest) -> r||s
    signed = cose.sign1(manifest.encode(), kid, signer, EXTERNAL_AAD)
    if len(signed) > MAX_MANIFEST:
        raise OtaError("size", "manifest of %d bytes, at most %d" % (len(signed), MAX_MANIFEST))
    return signed


def open_signed(signed, lookup):
    # The signature under a release key (lookup(kid) -> (x, y) or None),
    # then the payload -> Manifest. No device policy yet.
    if len(signed) > MAX_MANIFEST:
        raise OtaError("size", "manifest of %d bytes, at most %d" % (len(signed), MAX_MANIFEST))
    try:
        kid, payload = cose.verify1(signed, lookup, EXTERNAL_AAD)
    except cose.CoseError as e:
        detail = str(e)  # "reason: detail"
        raise OtaError(e.reason, detail[len(e.reason) + 2:] if detail.startswith(e.reason + ":") else detail)
    m = Manifest.decode(payload)
    m.kid = kid
    m.signed_size = len(signed)
    return m


class Policy:
    # What a device accepts. lookup(kid) -> release public key (x, y) or
    # None; installed_seq: the seq of the running version (0: none yet);
    # limits: {kind: most bytes} for the kinds this device can install (a
    # kind it lacks is refused); max_total: most bytes of a whole bundle.
    def __init__(self, lookup, vendor_id, class_id, installed_seq, limits, max_total):
        self.lookup = lookup
        self.vendor_id = vendor_id
        self.class_id = class_id
        self.installed_seq = installed_seq
        self.limits = limits
        self.max_total = max_total

    def check(self, m):
        if m.vendor_id != self.vendor_id:
            raise OtaError("vendor", "vendor id %s is not this device's" % m.vendor_id.hex())
        if m.class_id != self.class_id:
            raise OtaError("class", "class id %s is not this device's" % m.class_id.hex())
        if m.seq <= self.installed_seq:
            raise OtaError("seq", "seq %d, installed %d: not newer" % (m.seq, self.installed_seq))
        if self.installed_seq < m.min_prev_seq:
            raise OtaError("min_prev", "installed seq %d, this bundle needs at least %d" % (
                self.installed_seq, m.min_prev_seq))
        total = m.signed_size
        for kind, size, _ in m.components:
            most = self.limits.get(kind)
            if most is None:
                raise OtaError("components", "this device cannot install a %s component" % KIND_NAMES[kind])
            if size > most:
                raise OtaError("size", "%s component of %d bytes, at most %d" % (KIND_NAMES[kind], size, most))
            total += size
        if total > self.max_total:
            raise OtaError("size", "bundle of %d bytes, at most %d" % (total, self.max_total))

    def accept(self, signed):
        # The manifest's COSE_Sign1 bytes -> Manifest, or OtaError
        m = open_signed(signed, self.lookup)
        self.check(m)
        return m
