# ACSE for DLMS/COSEM (Green Book 9.4, IEC 62056-5-3), BER encoded: AARQ out,
# AARE in, RLRQ out, RLRE in, with the xDLMS InitiateRequest/InitiateResponse
# (A-XDR) their user-information carries.
#
#   AARQ 60 len | A1 application-context-name | [A6 calling-AP-title]
#        | [8A 02 07 80 sender-acse-requirements | 8B mechanism-name
#        | AC calling-authentication-value] | BE user-information
#   AARE 61 len | A1 context | A2 result | A3 diagnostic | [A4 responding-AP-title]
#        | [88 | 89 mechanism-name | AA responding-authentication-value] | [BE ...]
#   InitiateRequest  01 | [dedicated-key] | 00 | 00 | version 06 | 5F1F 04 00 conformance(3) | max PDU(2)
#   InitiateResponse 08 | [qos] | version | 5F1F 04 00 conformance(3) | max PDU(2) | vaa-name(2)
#
# Names are OBJECT IDENTIFIERs 2.16.756.5.8.1.x (context) and 2.16.756.5.8.2.x
# (mechanism): 60 85 74 05 08 01|02 x.
from compat import const

from dlms.apdu import ApduError, DlmsError

_AARQ = const(0x60)
_AARE = const(0x61)
_RLRQ = const(0x62)
_RLRE = const(0x63)
_INITIATE_REQUEST = const(0x01)
_INITIATE_RESPONSE = const(0x08)
_GLO_INITIATE_REQUEST = const(0x21)
GLO_INITIATE_RESPONSE = const(0x28)
_CONFIRMED_SERVICE_ERROR = const(0x0E)

CONTEXT_LN = const(1)
CONTEXT_LN_CIPHERED = const(3)
MECH_NONE = const(0)
MECH_LLS = const(1)
MECH_HLS_GMAC = const(5)

_ACCEPTED = const(0)
_REJECTED_PERMANENT = const(1)
_REJECTED_TRANSIENT = const(2)
_DIAG_AUTHENTICATION_FAILURE = const(13)
_DIAG_AUTHENTICATION_REQUIRED = const(14)
SOURCE_USER = const(1)
_SOURCE_PROVIDER = const(2)

# conformance block bits (Green Book 9.4.6.1), as a 24-bit big-endian value
_CONF_GENERAL_PROTECTION = const(0x400000)
_CONF_GENERAL_BLOCK_TRANSFER = const(0x200000)
_CONF_PRIORITY_MGMT = const(0x004000)
_CONF_ATTRIBUTE0_GET = const(0x002000)
_CONF_BLOCK_GET = const(0x001000)
CONF_BLOCK_SET = const(0x000800)
_CONF_BLOCK_ACTION = const(0x000400)
CONF_MULTIPLE_REFERENCES = const(0x000200)
_CONF_DATA_NOTIFICATION = const(0x000080)
_CONF_ACCESS = const(0x000040)
_CONF_GET = const(0x000010)
_CONF_SET = const(0x000008)
_CONF_SELECTIVE_ACCESS = const(0x000004)
_CONF_EVENT_NOTIFICATION = const(0x000002)
_CONF_ACTION = const(0x000001)
# GET, SET, ACTION, block-transfer-with-get, multiple-references, selective-access
DEFAULT_CONFORMANCE = const(0x00121D)

_DLMS_VERSION = const(6)
_VAA_LN = const(0x0007)

_OID = const(b"\x60\x85\x74\x05\x08")  # 2.16.756.5.8
_AUTH_REQUIRED = const(b"\x07\x80")  # ACSE-requirements: authentication (bit 0)

# Names: in dlms.names, imported when asked for.

def _word(words, i):
    if type(i) is not int or i < 0:
        return None
    w = words.split()
    return w[i] if i < len(w) else None


def result_name(result):
    from dlms import names
    return _word(names.RESULTS, result)


def diagnostic_name(diagnostic, source=SOURCE_USER):
    from dlms import names
    return _word(names.PROVIDER_DIAGS if source == _SOURCE_PROVIDER else names.USER_DIAGS, diagnostic)


class AssociationError(DlmsError):
    # The association failed. reason: "rejected" (result/diagnostic from the
    # AARE), "initiate" (the meter refused the xDLMS context: initiate_error
    # is the ServiceException), "authentication" (HLS pass 3/4 failed, or the
    # meter's f(CtoS) did not verify), "not_associated", "protocol".
    def __init__(self, reason, detail=None, result=None, diagnostic=None, source=SOURCE_USER,
                 initiate_error=None):
        self.reason = reason
        self.result = result
        self.diagnostic = diagnostic
        self.source = source
        self.initiate_error = initiate_error
        text = reason
        if result is not None:
            text += ": %s, %s" % (result_name(result) or result,
                                  diagnostic_name(diagnostic, source) or diagnostic)
        if detail is not None:
            text += ": %s" % (detail,)
        super().__init__(text)

    @property
    def result_name(self):
        return result_name(self.result)

    @property
    def diagnostic_name(self):
        return diagnostic_name(self.diagnostic, self.source)


# ---- BER ---------------------------------------------------------------


def _put(out, tag, content):
    n = len(content)
    out.append(tag)
    if n < 0x80:
        out.append(n)
    elif n < 0x100:
        out.append(0x81)
        out.append(n)
    else:
        out.append(0x82)
        out.append(n >> 8)
        out.append(n & 0xFF)
    out.extend(content)


def _len(b, p, end):
    # BER length at p -> (length, newpos), within end
    if p >= end:
        raise ApduError("truncated")
    n = b[p]
    p += 1
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 2 or p + k > end:
            raise ApduError("length")
        n = b[p] if k == 1 else (b[p] << 8) | b[p + 1]
        p += k
    if p + n > end:
        raise ApduError("length", n)
    return n, p


def _inner(b, p, end, tag):
    # the value of a one-element constructed field (tag len value) -> (start, end)
    if p >= end or b[p] != tag:
        raise ApduError("bad_field", tag)
    n, q = _len(b, p + 1, end)
    return q, q + n


def _name(b, p, end, kind):
    # OBJECT IDENTIFIER 2.16.756.5.8.kind.x -> x
    if end - p != 7 or bytes(b[p:p + 5]) != _OID or b[p + 5] != kind:
        raise ApduError("bad_name")
    return b[p + 6]


def _oid(kind, x):
    return _OID + bytes((kind, x))


# ---- xDLMS initiate --------------------------------------------------------


def initiate_request(conformance=DEFAULT_CONFORMANCE, max_pdu=0xFFFF, dedicated_key=None,
                     version=_DLMS_VERSION):
    out = bytearray((_INITIATE_REQUEST,))
    if dedicated_key is None:
        out.append(0)
    else:
        out.append(1)
        out.append(len(dedicated_key))
        out.extend(dedicated_key)
    out.append(0)  # response-allowed: DEFAULT TRUE
    out.append(0)  # proposed-quality-of-service: absent
    out.append(version)
    out.extend(b"\x5f\x1f\x04\x00")
    out.extend((conformance & 0xFFFFFF).to_bytes(3, "big"))
    out.extend((max_pdu & 0xFFFF).to_bytes(2, "big"))
    return bytes(out)


class InitiateResponse:
    def __init__(self, version, conformance, max_pdu, vaa_name, qos=None):
        self.version = version
        self.conformance = conformance  # negotiated
        self.max_pdu = max_pdu  # server-max-receive-pdu-size
        self.vaa_name = vaa_name  # 0x0007 with LN referencing
        self.qos = qos

    def __repr__(self):
        return "InitiateResponse(version=%d, conformance=0x%06x, max_pdu=%d, vaa=0x%04x)" % (
            self.version, self.conformance, self.max_pdu, self.vaa_name)


def parse_initiate_response(b):
    n = len(b)
    if n < 1 or b[0] != _INITIATE_RESPONSE:
        raise ApduError("unexpected", b[0] if n else None)
    p = 1
    qos = None
    if n > p and b[p]:
        if n < p + 2:
            raise ApduError("truncated")
        qos = b[p + 1]
        p += 1
    p += 1
    if n != p + 12:
        raise ApduError("truncated" if n < p + 12 else "trailing")
    if bytes(b[p + 1:p + 5]) != b"\x5f\x1f\x04\x00":
        raise ApduError("bad_field", "conformance")
    return InitiateResponse(b[p], (b[p + 5] << 16) | (b[p + 6] << 8) | b[p + 7],
                            (b[p + 8] << 8) | b[p + 9], (b[p + 10] << 8) | b[p + 11], qos)


# ---- AARQ / AARE -------------------------------------------------------


def aarq(user_information, mechanism=MECH_NONE, auth_value=None, system_title=None, ciphered=False):
    # user_information: the (possibly glo-ciphered) InitiateRequest;
    # auth_value: the password (LLS) or the challenge CtoS (HLS);
    # system_title: ours, sent as calling-AP-title (ciphered contexts, HLS-GMAC)
    body = bytearray()
    ctx = bytearray((0x06, 0x07))
    ctx.extend(_oid(1, CONTEXT_LN_CIPHERED if ciphered else CONTEXT_LN))
    _put(body, 0xA1, ctx)
    if system_title is not None:
        t = bytearray()
        _put(t, 0x04, system_title)
        _put(body, 0xA6, t)
    if mechanism != MECH_NONE:
        _put(body, 0x8A, _AUTH_REQUIRED)
        _put(body, 0x8B, _oid(2, mechanism))
        v = bytearray()
        _put(v, 0x80, auth_value or b"")
        _put(body, 0xAC, v)
    ui = bytearray()
    _put(ui, 0x04, user_information)
    _put(body, 0xBE, ui)
    out = bytearray()
    _put(out, _AARQ, body)
    return bytes(out)


class Aare:
    def __init__(self):
        self.context = None  # CONTEXT_LN or CONTEXT_LN_CIPHERED
        self.result = None
        self.source = SOURCE_USER  # whose diagnostic: acse-service-user or -provider
        self.diagnostic = None
        self.system_title = None  # responding-AP-title: the server's system title
        self.mechanism = None
        self.challenge = None  # responding-authentication-value: StoC
        self.user_information = None  # InitiateResponse (08), glo-ciphered (28) or error (0E)

    @property
    def accepted(self):
        return self.result == _ACCEPTED

    def __repr__(self):
        return "Aare(context=%r, result=%r, diagnostic=%r, mechanism=%r)" % (
            self.context, self.result, self.diagnostic, self.mechanism)


def parse_aare(b):
    n = len(b)
    if n < 1 or b[0] != _AARE:
        raise ApduError("unexpected", b[0] if n else None)
    ln, p = _len(b, 1, n)
    if p + ln != n:
        raise ApduError("trailing", n - p - ln)
    a = Aare()
    while p < n:
        tag = b[p]
        ln, q = _len(b, p + 1, n)
        e = q + ln
        if tag == 0xA1:
            s, t = _inner(b, q, e, 0x06)
            a.context = _name(b, s, t, 1)
        elif tag == 0xA2:
            s, t = _inner(b, q, e, 0x02)
            if t - s != 1:
                raise ApduError("bad_field", "result")
            a.result = b[s]
        elif tag == 0xA3:
            if q >= e or b[q] not in (0xA1, 0xA2):
                raise ApduError("bad_field", "diagnostic")
            a.source = b[q] - 0xA0
            s, t = _inner(b, q, e, b[q])
            s, t = _inner(b, s, t, 0x02)
            if t - s != 1:
                raise ApduError("bad_field", "diagnostic")
            a.diagnostic = b[s]
        elif tag == 0xA4:
            s, t = _inner(b, q, e, 0x04)
            a.system_title = bytes(b[s:t])
        elif tag == 0x89:
            a.mechanism = _name(b, q, e, 2)
        elif tag == 0xAA:
            s, t = _inner(b, q, e, 0x80)
            a.challenge = bytes(b[s:t])
        elif tag == 0xBE:
            s, t = _inner(b, q, e, 0x04)
            a.user_information = bytes(b[s:t])
        # 80 protocol-version, A5-A7, 88 responder-acse-requirements, BD: not needed
        p = e
    if a.result is None or a.diagnostic is None or a.context is None:
        raise ApduError("bad_field", "AARE without context, result or diagnostic")
    return a


# ---- RLRQ / RLRE -------------------------------------------------------

RELEASE_NORMAL = const(0)


def rlrq(reason=RELEASE_NORMAL, user_information=None):
    body = bytearray((0x80, 0x01, reason))
    if user_information is not None:
        ui = bytearray()
        _put(ui, 0x04, user_information)
        _put(body, 0xBE, ui)
    out = bytearray()
    _put(out, _RLRQ, body)
    return bytes(out)


class Rlre:
    def __init__(self, reason, user_information):
        self.reason = reason  # None when absent; 0 normal, 1 not-finished, 30 user-defined
        self.user_information = user_information

    def __repr__(self):
        return "Rlre(reason=%r)" % (self.reason,)


def parse_rlre(b):
    n = len(b)
    if n < 1 or b[0] != _RLRE:
        raise ApduError("unexpected", b[0] if n else None)
    ln, p = _len(b, 1, n)
    if p + ln != n:
        raise ApduError("trailing", n - p - ln)
    reason = ui = None
    while p < n:
        tag = b[p]
        ln, q = _len(b, p + 1, n)
        if tag == 0x80:
            if ln != 1:
                raise ApduError("bad_field", "reason")
            reason = b[q]
        elif tag == 0xBE:
            s, t = _inner(b, q, q + ln, 0x04)
            ui = bytes(b[s:t])
        p = q + ln
    return Rlre(reason, ui)


def decode(b):
    # AARE or RLRE -> Aare or Rlre (apdu.decode dispatches here)
    if len(b) and b[0] == _AARE:
        return parse_aare(b)
    return parse_rlre(b)
