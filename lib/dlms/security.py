# DLMS/COSEM symmetric security (Green Book 9.2.7, security suites 0 and 1):
# ciphered xDLMS APDUs with AES-128-GCM, HLS-GMAC (mechanism 5), and
# invocation-counter replay protection per sender system title.
#
#   service-specific:  tag | len | SC | IC(4) | payload [| T(12)]
#   general-glo/ded:   DB/DC | 08 | system title(8) | len | SC | IC(4) | payload [| T(12)]
#
# IV = system title of the sender || IC (big-endian). Per SC bits:
#   0x10 authentication only:       AAD = SC || AK || APDU, payload = APDU, tag
#   0x20 encryption only:           no AAD, payload = ciphertext, no tag
#   0x30 authenticated encryption:  AAD = SC || AK, payload = ciphertext, tag
# Errors: SecurityError (malformed, unsupported, refused by policy),
# InvocationCounterError (replay), aesgcm.AuthenticationError (wrong tag).
from compat import const

import aesgcm

SC_AUTHENTICATION = const(0x10)
_SC_ENCRYPTION = const(0x20)
_SC_BROADCAST = const(0x40)  # key set: the global broadcast key instead of unicast
_SC_COMPRESSION = const(0x80)
_SC_SUITE = const(0x0F)
_SC_AUTH_ENC = const(0x30)

GENERAL_GLO_CIPHERING = const(0xDB)
GENERAL_DED_CIPHERING = const(0xDC)
_GENERAL_CIPHERING = const(0xDD)

_TAG_LEN = const(12)  # security suites 0-2 use 96-bit GCM tags
_SYSTEM_TITLE_LEN = const(8)

_MAX_IC = const(0xFFFFFFFF)
_MAX_PEERS = const(16)
_MAX_LEN = const(0xFFFF)

AuthenticationError = aesgcm.AuthenticationError

# xDLMS APDU tag -> its global- and dedicated-ciphered forms (Green Book
# 9.5, xDLMS ASN.1; the same numbers as gurux-dlms's Command enum), three
# octets a row in one bytes object (CIPHERED_TAGS gives the rows as tuples).
# Each value occurs once, so a tag's index tells its row and column.
# Data-Notification (0x0F) has none: it goes in general-glo/ded-ciphering.
_TAGS = const(
    b"\x01\x21\x41"  # initiate-request
    b"\x08\x28\x48"  # initiate-response
    b"\x05\x25\x45"  # read-request
    b"\x06\x26\x46"  # write-request
    b"\x0c\x2c\x4c"  # read-response
    b"\x0d\x2d\x4d"  # write-response
    b"\x0e\x2e\x4e"  # confirmed-service-error
    b"\x16\x36\x56"  # unconfirmed-write-request
    b"\x18\x38\x58"  # information-report-request
    b"\xc0\xc8\xd0"  # get-request
    b"\xc1\xc9\xd1"  # set-request
    b"\xc2\xca\xd2"  # event-notification-request
    b"\xc3\xcb\xd3"  # action-request
    b"\xc4\xcc\xd4"  # get-response
    b"\xc5\xcd\xd5"  # set-response
    b"\xc7\xcf\xd7"  # action-response
)


def __getattr__(name):
    if name == "CIPHERED_TAGS":
        return tuple(tuple(_TAGS[i:i + 3]) for i in range(0, len(_TAGS), 3))
    raise AttributeError(name)


class SecurityError(ValueError):
    pass


class InvocationCounterError(SecurityError):
    # the sender's invocation counter did not increase: a replay
    pass


def _at(tag):
    # index of tag in _TAGS, or -1
    return _TAGS.find(tag) if type(tag) is int and 0 <= tag <= 0xFF else -1


def glo_tag(plain_tag):
    i = _at(plain_tag)
    if i < 0 or i % 3:
        raise SecurityError("no glo-ciphered form of APDU 0x%02x" % plain_tag)
    return _TAGS[i + 1]


def ded_tag(plain_tag):
    i = _at(plain_tag)
    if i < 0 or i % 3:
        raise SecurityError("no ded-ciphered form of APDU 0x%02x" % plain_tag)
    return _TAGS[i + 2]


def plain_tag(ciphered_tag):
    # -> (plain tag, dedicated) for a service-specific ciphered tag, else None
    i = _at(ciphered_tag)
    if i < 0 or not i % 3:
        return None
    return _TAGS[i - i % 3], i % 3 == 2


def is_ciphered(tag):
    return tag == GENERAL_GLO_CIPHERING or tag == GENERAL_DED_CIPHERING or plain_tag(tag) is not None


def read_length(buf, pos, end):
    # A-XDR length at buf[pos] -> (length, newpos); SecurityError if bad
    if pos >= end:
        raise SecurityError("truncated length")
    n = buf[pos]
    pos += 1
    if n < 0x80:
        return n, pos
    k = n & 0x7F
    if k == 0 or k > 2:
        raise SecurityError("unsupported length form 0x%02x" % n)
    if pos + k > end:
        raise SecurityError("truncated length")
    v = 0
    for _ in range(k):
        v = (v << 8) | buf[pos]
        pos += 1
    return v, pos


def put_length(out, n):
    if n < 0x80:
        out.append(n)
    elif n < 0x100:
        out.append(0x81)
        out.append(n)
    elif n <= _MAX_LEN:
        out.append(0x82)
        out.append(n >> 8)
        out.append(n & 0xFF)
    else:
        raise SecurityError("APDU too long")


def _check_sc(sc):
    if sc & _SC_COMPRESSION:
        raise SecurityError("compressed APDUs are not supported")
    if sc & _SC_SUITE > 1:
        raise SecurityError("security suite %d is not supported" % (sc & _SC_SUITE))


def _check_key(key, what):
    if key is None or len(key) != 16:
        raise SecurityError(what + " must be 16 bytes")
    return bytes(key)


class Unprotected:
    # A deciphered APDU and what its security header said.
    def __init__(self, tag, apdu, system_title, security_control, invocation_counter):
        self.tag = tag  # the ciphered APDU's tag (0xDB, 0xC8, ...)
        self.apdu = apdu  # the plain xDLMS APDU
        self.system_title = system_title
        self.security_control = security_control
        self.invocation_counter = invocation_counter

    @property
    def authenticated(self):
        return bool(self.security_control & SC_AUTHENTICATION)

    @property
    def encrypted(self):
        return bool(self.security_control & _SC_ENCRYPTION)

    def __repr__(self):
        return "Unprotected(0x%02x, sc=0x%02x, ic=%d, %s)" % (
            self.tag, self.security_control, self.invocation_counter, bytes(self.apdu).hex())


class SecurityContext:
    # system_title: ours (8 bytes; may be None for a receive-only push
    # listener); ek: global unicast encryption key; ak: authentication key
    # (None when the meter only encrypts); invocation_counter: the next IC we
    # send. allow_unauthenticated: accept APDUs that carry no GCM tag (SC
    # 0x20 or 0x00), as Austrian customer interfaces send them; off by default.
    def __init__(self, system_title, ek, ak=None, invocation_counter=0, allow_unauthenticated=False):
        if system_title is not None and len(system_title) != _SYSTEM_TITLE_LEN:
            raise SecurityError("system title must be 8 bytes")
        self.system_title = None if system_title is None else bytes(system_title)
        self.ek = _check_key(ek, "encryption key")
        self.ak = None if ak is None else _check_key(ak, "authentication key")
        self.invocation_counter = invocation_counter
        self.allow_unauthenticated = allow_unauthenticated
        self.dedicated_key = None  # set from the AARQ's dedicated-key
        self.broadcast_key = None
        self._gcm = {}  # key bytes -> aesgcm.AesGcm (tables built once per key)
        self._peers = {}  # sender system title -> [last IC, sent a tag before]

    def _cipher(self, key):
        g = self._gcm.get(key)
        if g is None:
            if len(self._gcm) >= 3:
                self._gcm.clear()
            g = aesgcm.AesGcm(key)
            self._gcm[key] = g
        return g

    def _key(self, sc, dedicated):
        if dedicated:
            if self.dedicated_key is None:
                raise SecurityError("no dedicated key")
            return _check_key(self.dedicated_key, "dedicated key")
        if sc & _SC_BROADCAST:
            if self.broadcast_key is None:
                raise SecurityError("no broadcast key")
            return _check_key(self.broadcast_key, "broadcast key")
        return self.ek

    def _ak(self):
        if self.ak is None:
            raise SecurityError("no authentication key")
        return self.ak

    # -- peers' invocation counters -------------------------------------------

    def peer_counter(self, system_title):
        # last accepted IC from that sender, or None
        p = self._peers.get(bytes(system_title))
        return None if p is None else p[0]

    def set_peer_counter(self, system_title, ic):
        # e.g. restored from flash after a reboot
        self._peers[bytes(system_title)] = [ic, False]

    def _check_peer(self, title, ic, sc):
        p = self._peers.get(title)
        if p is None:
            if len(self._peers) >= _MAX_PEERS:
                raise SecurityError("too many sender system titles")
            return
        if ic <= p[0]:
            raise InvocationCounterError("invocation counter %d not above %d" % (ic, p[0]))
        if p[1] and not sc & SC_AUTHENTICATION:
            raise SecurityError("sender authenticated before: untagged APDU refused")

    def _accept_peer(self, title, ic, sc):
        p = self._peers.get(title)
        if p is None:
            self._peers[title] = [ic, bool(sc & SC_AUTHENTICATION)]
        else:
            p[0] = ic
            if sc & SC_AUTHENTICATION:
                p[1] = True

    # -- protect (outgoing) ---------------------------------------------------

    def _next_ic(self):
        ic = self.invocation_counter
        if ic > _MAX_IC or ic < 0:
            raise SecurityError("invocation counter exhausted")
        self.invocation_counter = ic + 1
        return ic

    def protect(self, sc, apdu, general=False, dedicated=False):
        # Cipher our APDU with the next invocation counter -> bytes; sc is
        # the security control byte (0x30: authenticated and encrypted, suite 0).
        # general: general-glo/ded-ciphering (carries our system title);
        # otherwise the service-specific glo/ded tag of apdu[0].
        if self.system_title is None:
            raise SecurityError("no own system title")
        if not apdu:
            raise SecurityError("empty APDU")
        _check_sc(sc)
        if general:
            tag = GENERAL_DED_CIPHERING if dedicated else GENERAL_GLO_CIPHERING
        else:
            tag = ded_tag(apdu[0]) if dedicated else glo_tag(apdu[0])
        key = self._key(sc, dedicated)
        ic = self._next_ic()
        body = self._seal(key, sc, self.system_title, ic, apdu)
        out = bytearray()
        out.append(tag)
        if general:
            out.append(_SYSTEM_TITLE_LEN)
            out.extend(self.system_title)
        put_length(out, len(body))
        out.extend(body)
        return bytes(out)

    def _seal(self, key, sc, title, ic, apdu):
        # -> SC | IC | payload [| tag]
        head = bytearray(5)
        head[0] = sc
        head[1:5] = ic.to_bytes(4, "big")
        iv = bytes(title) + bytes(head[1:5])
        g = self._cipher(key)
        if sc & _SC_ENCRYPTION:
            if sc & SC_AUTHENTICATION:
                ct, t = g.encrypt(iv, apdu, bytes([sc]) + self._ak(), _TAG_LEN)
                return bytes(head) + ct + t
            return bytes(head) + g.crypt_unauthenticated(iv, apdu)
        if sc & SC_AUTHENTICATION:
            t = g.gmac(iv, bytes([sc]) + self._ak() + bytes(apdu), _TAG_LEN)
            return bytes(head) + bytes(apdu) + t
        return bytes(head) + bytes(apdu)

    # -- unprotect (incoming) -------------------------------------------------

    def unprotect(self, data, system_title=None):
        # A ciphered APDU (exactly data) -> Unprotected. system_title: the
        # sender's, needed for service-specific tags (they do not carry it).
        n = len(data)
        if n < 1:
            raise SecurityError("empty APDU")
        tag = data[0]
        pos = 1
        inner = None
        dedicated = False
        if tag == GENERAL_GLO_CIPHERING or tag == GENERAL_DED_CIPHERING:
            dedicated = tag == GENERAL_DED_CIPHERING
            tlen, pos = read_length(data, pos, n)
            if tlen != _SYSTEM_TITLE_LEN:
                raise SecurityError("system title length %d" % tlen)
            if pos + tlen > n:
                raise SecurityError("truncated system title")
            system_title = bytes(data[pos:pos + tlen])
            pos += tlen
        elif tag == _GENERAL_CIPHERING:
            raise SecurityError("general-ciphering is not supported")
        else:
            pt = plain_tag(tag)
            if pt is None:
                raise SecurityError("APDU 0x%02x is not ciphered" % tag)
            inner, dedicated = pt
            if system_title is None:
                raise SecurityError("sender system title unknown")
            if len(system_title) != _SYSTEM_TITLE_LEN:
                raise SecurityError("system title must be 8 bytes")
            system_title = bytes(system_title)
        clen, pos = read_length(data, pos, n)
        if pos + clen != n:
            raise SecurityError("length %d, %d bytes follow" % (clen, n - pos))
        if clen < 5:
            raise SecurityError("no security header")
        sc = data[pos]
        _check_sc(sc)
        ic = int.from_bytes(bytes(data[pos + 1:pos + 5]), "big")
        pos += 5
        authenticated = sc & SC_AUTHENTICATION
        if not authenticated and not self.allow_unauthenticated:
            raise SecurityError("APDU without authentication tag refused (SC 0x%02x)" % sc)
        end = n - _TAG_LEN if authenticated else n
        if end < pos:
            raise SecurityError("payload shorter than the tag")
        self._check_peer(system_title, ic, sc)
        key = self._key(sc, dedicated)
        iv = system_title + bytes(data[pos - 4:pos])
        payload = memoryview(data)[pos:end]  # no copy of the ciphertext
        g = self._cipher(key)
        if sc & _SC_ENCRYPTION:
            if authenticated:
                apdu = g.decrypt(iv, payload, bytes([sc]) + self._ak(), data[end:n])
            else:
                apdu = g.crypt_unauthenticated(iv, payload)
        else:
            apdu = bytes(payload)
            if authenticated:
                want = g.gmac(iv, bytes([sc]) + self._ak() + apdu, _TAG_LEN)
                if not _same(want, data, end):
                    raise AuthenticationError("GMAC tag mismatch")
        if inner is not None and (not apdu or apdu[0] != inner):
            raise SecurityError("ciphered 0x%02x does not hold APDU 0x%02x" % (tag, inner))
        self._accept_peer(system_title, ic, sc)
        return Unprotected(tag, apdu, system_title, sc, ic)

    # -- HLS-GMAC (authentication mechanism 5) ------------------------------

    def hls_gmac_response(self, sc, challenge, invocation_counter=None):
        # f(challenge) = SC | IC | GMAC(SC | AK | challenge), IV = our system
        # title | IC. Without invocation_counter the next own IC is used.
        if self.system_title is None:
            raise SecurityError("no own system title")
        _check_sc(sc)
        ic = self._next_ic() if invocation_counter is None else invocation_counter
        if ic < 0 or ic > _MAX_IC:
            raise SecurityError("invocation counter out of range")
        icb = ic.to_bytes(4, "big")
        t = self._cipher(self.ek).gmac(self.system_title + icb, bytes([sc]) + self._ak() + bytes(challenge), _TAG_LEN)
        return bytes([sc]) + icb + t

    def verify_hls_gmac(self, response, challenge, peer_system_title):
        # Check the peer's f(challenge) for the challenge we sent -> its IC.
        # Raises SecurityError if malformed, AuthenticationError if wrong.
        if len(response) != 5 + _TAG_LEN:
            raise SecurityError("HLS-GMAC response must be 17 bytes")
        if len(peer_system_title) != _SYSTEM_TITLE_LEN:
            raise SecurityError("system title must be 8 bytes")
        sc = response[0]
        _check_sc(sc)
        if not sc & SC_AUTHENTICATION:
            raise SecurityError("HLS-GMAC response without the authentication bit")
        icb = bytes(response[1:5])
        want = self._cipher(self.ek).gmac(bytes(peer_system_title) + icb, bytes([sc]) + self._ak() + bytes(challenge), _TAG_LEN)
        if not _same(want, response, 5):
            raise AuthenticationError("HLS-GMAC tag mismatch")
        return int.from_bytes(icb, "big")


def _same(want, buf, off):
    # constant-time compare of want with buf[off:off + len(want)]
    diff = 0
    for i in range(len(want)):
        diff |= want[i] ^ buf[off + i]
    return diff == 0
