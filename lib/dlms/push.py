# DLMS push receiver: Data-Notification APDUs, plain or general-glo/ded-ciphered,
# arriving in M-Bus long frames (customer interfaces: AT, LU, ...), HDLC
# frames (HAN ports: NO, SE, ...) or IEC 62056-47 wrapper frames (TCP/UDP),
# possibly split in general-block-transfer blocks.
#
#   Data-Notification ::= 0F | long-invoke-id-and-priority (4) |
#                         date-time OCTET STRING | notification-body (Data)
#
# The date-time is an A-XDR OCTET STRING, so "0C" + 12 bytes or "00" (none);
# some meters put the Data tag in front ("09 0C" + 12): both are accepted.
# The body is decoded with dlms.axdr. PushReceiver is sans-I/O: feed(bytes)
# -> list of DataNotification objects and error objects, one per bad frame
# or APDU, in order; it never raises on input and its buffers are bounded.
from compat import const

import aesgcm
from dlms import security

try:
    from dlms import axdr
except ImportError:  # decode the header only
    axdr = None

_DATA_NOTIFICATION = const(0x0F)
GENERAL_BLOCK_TRANSFER = const(0xE0)
_DATE_TIME_LEN = const(12)

_GBT_LAST = const(0x80)
_LLC_0 = const(0xE6)

ERRORS = (security.SecurityError, aesgcm.AuthenticationError)


class PushError(ValueError):
    # reason: "not_notification" (detail: the APDU tag), "truncated",
    # "bad_date_time", "bad_body" (detail: the axdr error), "trailing"
    # (detail: bytes after the body), "not_ciphered_notification" (a
    # ciphered APDU holding something else), "no_security" (ciphered, but no
    # keys), "gbt" (detail: what), "oversized"
    def __init__(self, reason, detail=None):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class DataNotification:
    def __init__(self, long_invoke_id, date_time, body, body_bytes, unprotected=None):
        self.long_invoke_id = long_invoke_id  # invoke id bits 0-23, flags 28-31
        self.date_time = date_time  # the 12 COSEM date-time octets, or None
        self.body = body  # decoded Data (None without dlms.axdr)
        self.body_bytes = body_bytes  # the A-XDR encoded body
        sec = unprotected
        self.system_title = None if sec is None else sec.system_title
        self.security_control = None if sec is None else sec.security_control
        self.invocation_counter = None if sec is None else sec.invocation_counter

    @property
    def invoke_id(self):
        return self.long_invoke_id & 0xFFFFFF

    @property
    def timestamp(self):
        # the date-time as a dlms.axdr.DateTime, or None
        if self.date_time is None or axdr is None:
            return None
        return axdr.DateTime.from_octets(self.date_time)

    @property
    def authenticated(self):
        return self.security_control is not None and bool(self.security_control & security.SC_AUTHENTICATION)

    def __repr__(self):
        return "DataNotification(0x%08x, %s, %r)" % (
            self.long_invoke_id, None if self.date_time is None else bytes(self.date_time).hex(), self.body)


def encode_notification(body_bytes, long_invoke_id=0, date_time=None):
    # -> plain Data-Notification APDU; body_bytes is already A-XDR encoded
    out = bytearray()
    out.append(_DATA_NOTIFICATION)
    out.extend((long_invoke_id & 0xFFFFFFFF).to_bytes(4, "big"))
    if date_time is None:
        out.append(0)
    else:
        if len(date_time) != _DATE_TIME_LEN:
            raise PushError("bad_date_time", len(date_time))
        out.append(_DATE_TIME_LEN)
        out.extend(date_time)
    out.extend(body_bytes)
    return bytes(out)


def parse_notification(apdu, unprotected=None):
    # A plain Data-Notification APDU (exactly apdu) -> DataNotification.
    # Raises PushError.
    n = len(apdu)
    if n < 1 or apdu[0] != _DATA_NOTIFICATION:
        raise PushError("not_notification", apdu[0] if n else None)
    if n < 6:
        raise PushError("truncated")
    lid = int.from_bytes(bytes(apdu[1:5]), "big")
    p = 5
    dl = apdu[p]
    p += 1
    if dl == 0x09 and p < n and apdu[p] == _DATE_TIME_LEN:
        # tagged variant: Data octet-string instead of a bare OCTET STRING
        dl = _DATE_TIME_LEN
        p += 1
    if dl == 0:
        dt = None
    elif dl == _DATE_TIME_LEN:
        if p + dl > n:
            raise PushError("truncated")
        dt = bytes(apdu[p:p + dl])
        p += dl
    else:
        raise PushError("bad_date_time", dl)
    if p >= n:
        raise PushError("truncated")
    body_bytes = bytes(apdu[p:n])
    body = None
    if axdr is not None:
        try:
            body, end = axdr.decode(body_bytes, 0)
        except axdr.AxdrError as e:
            raise PushError("bad_body", e)
        if end != len(body_bytes):
            raise PushError("trailing", len(body_bytes) - end)
    return DataNotification(lid, dt, body, body_bytes, unprotected)


def decode_apdu(apdu, security_context=None):
    # A plain or ciphered Data-Notification -> DataNotification. Without a
    # security context only plain APDUs are taken; with one, plain APDUs are
    # refused unless it allows unauthenticated ones (else anyone on the line
    # could push plain values past the keys). Raises PushError,
    # security.SecurityError (InvocationCounterError for a replay) or
    # aesgcm.AuthenticationError.
    if len(apdu) < 1:
        raise PushError("truncated")
    tag = apdu[0]
    if tag == security.GENERAL_GLO_CIPHERING or tag == security.GENERAL_DED_CIPHERING:
        if security_context is None:
            raise PushError("no_security")
        u = security_context.unprotect(apdu)
        if not u.apdu or u.apdu[0] != _DATA_NOTIFICATION:
            raise PushError("not_ciphered_notification", u.apdu[0] if u.apdu else None)
        return parse_notification(u.apdu, u)
    if security_context is not None and not security_context.allow_unauthenticated and tag == _DATA_NOTIFICATION:
        raise security.SecurityError("plain APDU refused: keys are configured")
    return parse_notification(apdu)


class PushReceiver:
    # transport: "mbus" (M-Bus long frames, DLMS transport layer), "hdlc"
    # (HDLC frames, segmented or not, LLC E6 E7 00), "wrapper" (IEC 62056-47
    # over TCP/UDP), or "apdu" (call feed_apdu() with whole APDUs from
    # elsewhere). max_apdu bounds every reassembly buffer.
    def __init__(self, security_context=None, transport="mbus", max_apdu=2048):
        self.security = security_context
        self.transport = transport
        self.max_apdu = max_apdu
        self._framer = None
        self._segments = None
        if transport == "mbus":
            import mbus  # each transport's module is loaded only when used

            self._framer = mbus.Framer()
            self._segments = mbus.Reassembler(max_apdu)
        elif transport == "hdlc":
            from dlms import hdlc

            self._framer = hdlc.Framer()
            self._hdlc = bytearray()
        elif transport == "wrapper":
            from dlms import wrapper

            self._framer = wrapper.Framer(max_apdu)
        elif transport != "apdu":
            raise ValueError("transport must be mbus, hdlc, wrapper or apdu")
        self._gbt = None  # reassembled blocks, or None
        self._gbt_next = 0
        self.notifications = 0
        self.errors = 0

    def feed(self, data):
        out = []
        if self._framer is None:
            raise ValueError("transport 'apdu': use feed_apdu()")
        for item in self._framer.feed(data):
            self._frame(item, out)
        self.errors += sum(1 for x in out if not isinstance(x, DataNotification))
        return out

    def flush(self):
        # An idle gap: drop partial frames, segments and blocks -> errors.
        out = []
        if self.transport == "wrapper":
            self._framer.reset()
        elif self._framer is not None:
            out.extend(self._framer.flush())
        if self._segments is not None and self._segments.busy:
            self._segments.reset()
            import mbus

            out.append(mbus.SegmentError("incomplete"))
        if self.transport == "hdlc" and self._hdlc:
            self._hdlc = bytearray()
            out.append(PushError("truncated"))
        if self._gbt is not None:
            self._gbt = None
            out.append(PushError("gbt", "incomplete"))
        self.errors += len(out)
        return out

    def feed_apdu(self, apdu):
        out = []
        self._apdu(apdu, out)
        self.errors += sum(1 for x in out if not isinstance(x, DataNotification))
        return out

    def _frame(self, item, out):
        if isinstance(item, Exception):
            out.append(item)
            return
        if self.transport == "mbus":
            for x in self._segments.push(item):
                if isinstance(x, Exception):
                    out.append(x)
                else:
                    self._apdu(x, out)
            return
        if self.transport == "wrapper":
            self._apdu(item.apdu, out)
            return
        # HDLC: join segmented frames' information fields
        info = item.info
        if not info:
            return
        buf = self._hdlc
        if len(buf) + len(info) > self.max_apdu:
            self._hdlc = bytearray()
            out.append(PushError("oversized"))
            return
        buf.extend(info)
        if item.segmented:
            return
        self._hdlc = bytearray()
        if len(buf) >= 3 and buf[0] == _LLC_0 and buf[1] & 0xFE == _LLC_0 and buf[2] == 0:
            buf = memoryview(buf)[3:]
        self._apdu(bytes(buf), out)

    def _apdu(self, apdu, out):
        if len(apdu) and apdu[0] == GENERAL_BLOCK_TRANSFER:
            apdu = self._block(apdu, out)
            if apdu is None:
                return
        try:
            out.append(decode_apdu(apdu, self.security))
            self.notifications += 1
        except PushError as e:
            out.append(e)
        except ERRORS as e:
            out.append(e)

    def _block(self, apdu, out):
        # general-block-transfer: E0 | control | block number (2) | acked (2) |
        # block data (A-XDR length + bytes); control bit 7 = last block.
        # -> the reassembled APDU after the last block, else None.
        n = len(apdu)
        if n < 7:
            out.append(PushError("truncated"))
            return None
        ctrl = apdu[1]
        num = (apdu[2] << 8) | apdu[3]
        try:
            ln, p = security.read_length(apdu, 6, n)
        except security.SecurityError:
            ln, p = -1, n
        if p + ln != n:
            out.append(PushError("gbt", "length"))
            return None
        if num == 1:
            if self._gbt is not None:
                out.append(PushError("gbt", "incomplete"))
            self._gbt = bytearray()
        elif self._gbt is None or num != self._gbt_next:
            self._gbt = None
            out.append(PushError("gbt", "sequence"))
            return None
        if len(self._gbt) + ln > self.max_apdu:
            self._gbt = None
            out.append(PushError("oversized"))
            return None
        self._gbt.extend(memoryview(apdu)[p:n])
        self._gbt_next = num + 1
        if ctrl & _GBT_LAST:
            whole = bytes(self._gbt)
            self._gbt = None
            return whole
        return None
