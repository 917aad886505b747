# xDLMS services with logical-name referencing (Green Book 9.3, IEC 62056-5-3):
# GET, SET and ACTION requests out; their responses, exception-response and
# confirmed-service-error in, all decoded through one table (decode()).
#
#   get-request     C0 | 01 normal, 02 next, 03 with-list | invoke-id-and-priority | ...
#   get-response    C4 | 01 normal, 02 with-datablock, 03 with-list | invoke | ...
#   set-request     C1 | 01 normal, 02 with-first-datablock, 03 with-datablock | invoke | ...
#   set-response    C5 | 01 normal .. 05 with-list | invoke | ...
#   action-request  C3 | 01 normal | invoke | method descriptor | [01 Data]
#   action-response C7 | 01 normal, 02 with-pblock, 03 with-list, 04 next-pblock | invoke | ...
#   exception-response      D8 | state-error | service-error [| expected IC (4)]
#   confirmed-service-error 0E | service | error class | error value
#
# An attribute descriptor is class-id (2) | logical name (6) | attribute-id (1);
# access-selection is 00, or 01 | selector | parameters (A-XDR Data, as built
# by cosem.range_descriptor / entry_descriptor). Data stays A-XDR encoded until
# asked for: a block's raw-data is a memoryview into the APDU, for streaming.
import struct

from compat import const

from dlms import axdr
from dlms.obis import Obis, ObisError

_GET_REQUEST = const(0xC0)
_SET_REQUEST = const(0xC1)
_ACTION_REQUEST = const(0xC3)
GET_RESPONSE = const(0xC4)
SET_RESPONSE = const(0xC5)
ACTION_RESPONSE = const(0xC7)
EXCEPTION_RESPONSE = const(0xD8)
CONFIRMED_SERVICE_ERROR = const(0x0E)

# request/response choices
NORMAL = const(1)
_NEXT = const(2)  # get-request-next
DATABLOCK = const(2)  # get-response-with-datablock, set-request-with-first-datablock
WITH_LIST = const(3)  # get-request/-response-with-list
_SET_WITH_DATABLOCK = const(3)
SET_LAST_DATABLOCK = const(3)  # set-response-last-datablock
_SET_LAST_DATABLOCK_WITH_LIST = const(4)
_SET_WITH_LIST = const(5)  # set-response-with-list
_ACTION_WITH_PBLOCK = const(2)
_ACTION_WITH_LIST = const(3)
_ACTION_NEXT_PBLOCK = const(4)

# invoke-id-and-priority: bits 0-3 invoke id, bit 6 confirmed, bit 7 high priority
_INVOKE_CONFIRMED = const(0x40)
_INVOKE_HIGH_PRIORITY = const(0x80)
_DEFAULT_INVOKE = const(0xC1)  # what gurux-dlms and dlms-cosem send: id 1, confirmed, high

# data-access-result (Blue Book 4.1.5)
SUCCESS = const(0)
_HARDWARE_FAULT = const(1)
_TEMPORARY_FAILURE = const(2)
_READ_WRITE_DENIED = const(3)
_OBJECT_UNDEFINED = const(4)
_OBJECT_CLASS_INCONSISTENT = const(9)
_OBJECT_UNAVAILABLE = const(11)
_TYPE_UNMATCHED = const(12)
_SCOPE_OF_ACCESS_VIOLATED = const(13)
_DATA_BLOCK_UNAVAILABLE = const(14)
_LONG_GET_ABORTED = const(15)
_NO_LONG_GET_IN_PROGRESS = const(16)
_LONG_SET_ABORTED = const(17)
_NO_LONG_SET_IN_PROGRESS = const(18)
_DATA_BLOCK_NUMBER_INVALID = const(19)
_OTHER_REASON = const(250)

# exception-response
_STATE_SERVICE_NOT_ALLOWED = const(1)
_STATE_SERVICE_UNKNOWN = const(2)
_SERVICE_OPERATION_NOT_POSSIBLE = const(1)
_SERVICE_NOT_SUPPORTED = const(2)
_SERVICE_OTHER_REASON = const(3)
_SERVICE_PDU_TOO_LONG = const(4)
_SERVICE_DECIPHERING_ERROR = const(5)
_SERVICE_INVOCATION_COUNTER_ERROR = const(6)

# Names of codes: in dlms.names, imported when asked for.

def _word(words, i):
    if type(i) is not int or i < 0:
        return None
    w = words.split()
    if i >= len(w) or w[i] == "-":
        return None
    return w[i]


def _coded(codes, words, v):
    if type(v) is not int or not 0 <= v <= 255:
        return None
    return _word(words, codes.find(bytes((v,))))


def result_name(code):
    # data-access-result name: 11 -> "object-unavailable"; None if unknown
    from dlms import names
    return _coded(names.DAR_CODES, names.DAR_NAMES, code)


def action_result_name(code):
    from dlms import names
    return _coded(names.ACTION_CODES, names.ACTION_NAMES, code)


# ---- errors ------------------------------------------------------------


class DlmsError(ValueError):
    # base of the DLMS application layer's errors (acse, apdu, client)
    pass


class ApduError(DlmsError):
    # malformed or unexpected APDU; reason: "empty", "unknown_tag", "bad_choice",
    # "truncated", "length", "trailing", "bad_data" (detail: the A-XDR error),
    # "unexpected" (a valid APDU that does not answer the request)
    def __init__(self, reason, detail=None):
        super().__init__(reason if detail is None else "%s: %s" % (reason, detail))
        self.reason = reason
        self.detail = detail


class AccessError(DlmsError):
    # the meter refused an attribute or method: result is the data-access-result
    # (or action-result for ACTION) code, name its name
    def __init__(self, result, what="", action=False):
        self.result = result
        self.name = (action_result_name if action else result_name)(result) or str(result)
        super().__init__("%s%s" % (self.name, (" (%s)" % what) if what else ""))


class BlockTransferError(DlmsError):
    # block numbers out of step, a transfer over the size bound, an unfinished array
    pass


class ServiceException(DlmsError):
    # exception-response (tag 0xD8: state_error, service_error and, for
    # invocation-counter-error, the counter the meter expects) or
    # confirmed-service-error (tag 0x0E: service, error_class, error).
    # decode() returns one; the client raises it.
    def __init__(self, tag, a, b, c=None):
        self.tag = tag
        if tag == EXCEPTION_RESPONSE:
            self.state_error = a
            self.service_error = b
            self.invocation_counter = c
            text = "%s, %s" % (self.state_name or a, self.service_name or b)
            if c is not None:
                text += " (expects IC %d)" % c
        else:
            self.service = a
            self.error_class = b
            self.error = c
            text = "%s: %s %s" % (self.service_name or a, self.error_class_name or b,
                                  self.error_name or c)
        super().__init__(text)

    @property
    def state_name(self):
        if self.tag != EXCEPTION_RESPONSE:
            return None
        from dlms import names
        return _word(names.STATE_NAMES, self.state_error)

    @property
    def service_name(self):
        from dlms import names
        if self.tag == EXCEPTION_RESPONSE:
            return _word(names.SERVICE_NAMES, self.service_error)
        return _word(names.CSE_SERVICES, self.service)

    @property
    def error_class_name(self):
        if self.tag == EXCEPTION_RESPONSE:
            return None
        from dlms import names
        return _word(names.CSE_CLASSES, self.error_class)

    @property
    def error_name(self):
        from dlms import names
        if self.tag == EXCEPTION_RESPONSE or not 0 <= self.error_class < len(names.CSE_VALUES):
            return None
        words = names.CSE_VALUES[self.error_class]
        return _word(words, self.error) if words else None


# ---- requests ----------------------------------------------------------


def invoke_id_and_priority(invoke_id=1, high_priority=True, confirmed=True):
    return ((invoke_id & 0x0F) | (_INVOKE_CONFIRMED if confirmed else 0)
            | (_INVOKE_HIGH_PRIORITY if high_priority else 0))


def ln_bytes(obis):
    # Obis, "1-0:1.8.0*255" (any form Obis.parse takes) or 6 bytes -> 6 bytes
    if isinstance(obis, Obis):
        return obis.to_bytes()
    try:
        if isinstance(obis, str):
            return Obis.parse(obis).to_bytes()
        return Obis.from_bytes(obis).to_bytes()
    except ObisError as e:
        raise DlmsError("logical name: %s" % e)


def _head(tag, choice, invoke):
    out = bytearray(3)
    out[0] = tag
    out[1] = choice
    out[2] = invoke & 0xFF
    return out


def _descriptor(out, class_id, obis, index):
    if type(class_id) is not int or not 0 <= class_id <= 0xFFFF:
        raise DlmsError("class id %r" % (class_id,))
    if type(index) is not int or not -128 <= index <= 255:
        raise DlmsError("attribute/method %r" % (index,))
    out.extend(struct.pack(">H", class_id))
    out.extend(ln_bytes(obis))
    out.append(index & 0xFF)


def _access(out, access):
    # access: None, or (selector, parameters as A-XDR bytes)
    if access is None:
        out.append(0)
        return
    sel, params = access
    if type(sel) is not int or not 0 < sel < 256:
        raise DlmsError("access selector %r" % (sel,))
    out.append(1)
    out.append(sel)
    out.extend(params)


def _octets(out, raw):
    axdr.put_length(out, len(raw))
    out.extend(raw)


def get_request(class_id, obis, attr, access=None, invoke=_DEFAULT_INVOKE):
    out = _head(_GET_REQUEST, NORMAL, invoke)
    _descriptor(out, class_id, obis, attr)
    _access(out, access)
    return bytes(out)


def get_request_next(block, invoke=_DEFAULT_INVOKE):
    out = _head(_GET_REQUEST, _NEXT, invoke)
    out.extend(struct.pack(">I", block & 0xFFFFFFFF))
    return bytes(out)


def get_request_with_list(items, invoke=_DEFAULT_INVOKE):
    # items: (class_id, obis, attr) or (class_id, obis, attr, access)
    out = _head(_GET_REQUEST, WITH_LIST, invoke)
    axdr.put_length(out, len(items))
    for it in items:
        _descriptor(out, it[0], it[1], it[2])
        _access(out, it[3] if len(it) > 3 else None)
    return bytes(out)


def set_request(class_id, obis, attr, data, access=None, invoke=_DEFAULT_INVOKE):
    # data: the new value, A-XDR encoded (axdr.encode(...))
    out = _head(_SET_REQUEST, NORMAL, invoke)
    _descriptor(out, class_id, obis, attr)
    _access(out, access)
    out.extend(data)
    return bytes(out)


def set_request_first_block(class_id, obis, attr, raw, last, access=None, invoke=_DEFAULT_INVOKE):
    # set-request-with-first-datablock: raw is the first part of the encoded value
    out = _head(_SET_REQUEST, DATABLOCK, invoke)
    _descriptor(out, class_id, obis, attr)
    _access(out, access)
    out.append(1 if last else 0)
    out.extend(b"\x00\x00\x00\x01")
    _octets(out, raw)
    return bytes(out)


def set_request_block(raw, last, block, invoke=_DEFAULT_INVOKE):
    # set-request-with-datablock: the following parts, block numbers from 2
    out = _head(_SET_REQUEST, _SET_WITH_DATABLOCK, invoke)
    out.append(1 if last else 0)
    out.extend(struct.pack(">I", block & 0xFFFFFFFF))
    _octets(out, raw)
    return bytes(out)


def action_request(class_id, obis, method, params=None, invoke=_DEFAULT_INVOKE):
    # params: method-invocation-parameters, A-XDR encoded, or None
    out = _head(_ACTION_REQUEST, NORMAL, invoke)
    _descriptor(out, class_id, obis, method)
    if params is None:
        out.append(0)
    else:
        out.append(1)
        out.extend(params)
    return bytes(out)


# ---- responses ---------------------------------------------------------


class Response:
    # A GET, SET or ACTION response (tag, kind = the choice, invoke).
    # result: data-access-result (GET, SET), action-result (ACTION), or None
    #   when a GET result carries data.
    # data / value: the A-XDR encoded Data (memoryview) and its decoded value
    #   (GET normal, ACTION return parameters; value only with values=True).
    # data_result: ACTION return parameters that are a data-access-result.
    # last, block, raw: a data block (raw-data as a memoryview), or a block number.
    # items: with-list: [(result, value)], result None when value holds data.
    def __init__(self, tag, kind, invoke):
        self.tag = tag
        self.kind = kind
        self.invoke = invoke
        self.result = None
        self.data = None
        self.value = None
        self.data_result = None
        self.last = True
        self.block = 0
        self.raw = None
        self.items = None

    def __repr__(self):
        return "Response(0x%02x, %d, invoke=0x%02x, result=%r, value=%r, block=%d%s%s)" % (
            self.tag, self.kind, self.invoke, self.result, self.value, self.block,
            "" if self.last else ", more", "" if self.items is None else ", %d items" % len(self.items))


def _need(n, k):
    if n < k:
        raise ApduError("truncated")


def _length(b, p, n):
    # A-XDR length -> (length, newpos), bounded by the octets present
    if p >= n:
        raise ApduError("truncated")
    v = b[p]
    p += 1
    if v & 0x80:
        k = v & 0x7F
        if k == 0 or k > 4 or p + k > n:
            raise ApduError("length")
        v = 0
        for i in range(p, p + k):
            v = (v << 8) | b[i]
        p += k
    if v > n - p:
        raise ApduError("length", v)
    return v, p


def _u32(b, p, n):
    _need(n, p + 4)
    return struct.unpack_from(">I", b, p)[0]


def _end(p, n):
    if p != n:
        raise ApduError("trailing", n - p)


def _get_data_result(r, b, p, n, values, last):
    # Get-Data-Result: 00 Data | 01 data-access-result
    _need(n, p + 1)
    c = b[p]
    if c == 1:
        _need(n, p + 2)
        r.result = b[p + 1]
        return p + 2
    if c != 0:
        raise ApduError("bad_choice", c)
    if last and not values:
        r.data = memoryview(b)[p + 1:n]
        return n
    q = p + 1
    if q >= n:
        raise ApduError("truncated")
    r.value, e = axdr.decode(b, q)
    r.data = memoryview(b)[q:e]
    return e


def _get_response(b, n, values):
    _need(n, 3)
    r = Response(b[0], b[1], b[2])
    kind = r.kind
    if kind == NORMAL:
        _end(_get_data_result(r, b, 3, n, values, True), n)
    elif kind == DATABLOCK:
        _need(n, 9)
        r.last = b[3] != 0
        r.block = _u32(b, 4, n)
        c = b[8]
        if c == 0:
            ln, p = _length(b, 9, n)
            _end(p + ln, n)
            r.raw = memoryview(b)[p:n]
        elif c == 1:
            _need(n, 10)
            r.result = b[9]
            _end(10, n)
        else:
            raise ApduError("bad_choice", c)
    elif kind == WITH_LIST:
        cnt, p = _length(b, 3, n)
        items = []
        for _ in range(cnt):
            it = Response(0, 0, 0)
            p = _get_data_result(it, b, p, n, True, False)
            items.append((it.result, it.value))
        _end(p, n)
        r.items = items
    else:
        raise ApduError("bad_choice", kind)
    return r


def _results(b, p, n):
    cnt, p = _length(b, p, n)
    _need(n, p + cnt)
    return [b[i] for i in range(p, p + cnt)], p + cnt


def _set_response(b, n, values):
    _need(n, 4)
    r = Response(b[0], b[1], b[2])
    kind = r.kind
    if kind == NORMAL:
        r.result = b[3]
        p = 4
    elif kind == DATABLOCK:
        r.block = _u32(b, 3, n)
        r.last = False
        p = 7
    elif kind == SET_LAST_DATABLOCK:
        r.result = b[3]
        r.block = _u32(b, 4, n)
        p = 8
    elif kind == _SET_LAST_DATABLOCK_WITH_LIST or kind == _SET_WITH_LIST:
        res, p = _results(b, 3, n)
        r.items = [(x, None) for x in res]
        if kind == _SET_LAST_DATABLOCK_WITH_LIST:
            r.block = _u32(b, p, n)
            p += 4
    else:
        raise ApduError("bad_choice", kind)
    _end(p, n)
    return r


def _action_result(r, b, p, n, values):
    # action-result | return-parameters OPTIONAL (01 Get-Data-Result)
    _need(n, p + 2)
    r.result = b[p]
    c = b[p + 1]
    if c == 0:
        return p + 2
    if c != 1:
        raise ApduError("bad_choice", c)
    sub = Response(0, 0, 0)
    p = _get_data_result(sub, b, p + 2, n, True, False)
    r.data_result = sub.result
    r.data = sub.data
    r.value = sub.value
    return p


def _action_response(b, n, values):
    _need(n, 3)
    r = Response(b[0], b[1], b[2])
    kind = r.kind
    if kind == NORMAL:
        p = _action_result(r, b, 3, n, values)
    elif kind == _ACTION_WITH_PBLOCK:
        _need(n, 8)
        r.last = b[3] != 0
        r.block = _u32(b, 4, n)
        ln, p = _length(b, 8, n)
        r.raw = memoryview(b)[p:p + ln]
        p += ln
    elif kind == _ACTION_WITH_LIST:
        cnt, p = _length(b, 3, n)
        items = []
        for _ in range(cnt):
            it = Response(0, 0, 0)
            p = _action_result(it, b, p, n, True)
            items.append((it.result, it.value))
        r.items = items
    elif kind == _ACTION_NEXT_PBLOCK:
        r.block = _u32(b, 3, n)
        p = 7
    else:
        raise ApduError("bad_choice", kind)
    _end(p, n)
    return r


def _exception_response(b, n, values):
    _need(n, 3)
    ic = None
    if b[2] == _SERVICE_INVOCATION_COUNTER_ERROR and n >= 7:
        ic = _u32(b, 3, n)
    return ServiceException(EXCEPTION_RESPONSE, b[1], b[2], ic)


def _confirmed_service_error(b, n, values):
    _need(n, 4)
    _end(4, n)
    return ServiceException(CONFIRMED_SERVICE_ERROR, b[1], b[2], b[3])


def _acse(b, n, values):
    from dlms import acse  # acse imports this module: resolve at first use

    return acse.decode(b)


# The one dispatch table: APDU tag -> decoder(buf, len, values)
_DECODERS = (
    (GET_RESPONSE, _get_response),
    (SET_RESPONSE, _set_response),
    (ACTION_RESPONSE, _action_response),
    (EXCEPTION_RESPONSE, _exception_response),
    (CONFIRMED_SERVICE_ERROR, _confirmed_service_error),
    (0x61, _acse),  # AARE
    (0x63, _acse),  # RLRE
)


def decode(buf, values=True):
    # A plain (deciphered) APDU -> Response, ServiceException (not raised),
    # acse.Aare or acse.Rlre. values=False leaves a GET normal result's Data
    # undecoded (r.data runs to the end of the APDU), for streaming.
    # Raises ApduError on malformed input, never IndexError or AxdrError.
    n = len(buf)
    if n == 0:
        raise ApduError("empty")
    tag = buf[0]
    for t, fn in _DECODERS:
        if t == tag:
            try:
                return fn(buf, n, values)
            except axdr.AxdrError as e:
                raise ApduError("bad_data", e)
    raise ApduError("unknown_tag", tag)
