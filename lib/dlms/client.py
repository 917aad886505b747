# DLMS/COSEM client, sans-I/O: associations (no security, LLS, HLS-GMAC),
# ciphered APDUs, GET (block transfer, with-list, streamed rows), SET, ACTION,
# and two byte transports (HDLC with the LLC header, the TCP wrapper).
#
# Every Client operation is a conversation: a generator that yields request
# APDUs and is sent the response APDUs (plain or ciphered, without framing);
# its return value is the result, its exceptions are DlmsError subclasses.
# The transports turn APDUs into line bytes and back; the adapter moves bytes
# and owns time. An asyncio adapter (firmware side) is about this:
#
#   import asyncio
#   from compat import ticks_ms
#   from dlms import acse, hdlc
#   from dlms.client import Client, HdlcTransport
#
#   class MeterLine:                        # APDUs over a UART (or a socket)
#       def __init__(self, reader, writer, transport):
#           self.r, self.w, self.t = reader, writer, transport
#       async def _do(self, out):           # write, then pump until done
#           while True:
#               for b in out:
#                   self.w.write(b)
#               await self.w.drain()
#               if self.t.ready():
#                   return self.t.response()   # raises TransportError
#               try:
#                   data = await asyncio.wait_for_ms(self.r.read(256), 50)
#               except asyncio.TimeoutError:
#                   data = b""
#               now = ticks_ms()
#               out = self.t.receive_data(data, now) + self.t.tick(now)
#       def open(self):  return self._do(self.t.open(ticks_ms()))
#       def close(self): return self._do(self.t.close(ticks_ms()))
#       async def run(self, conversation):     # drive one conversation
#           reply = None
#           while True:
#               try:
#                   req = conversation.send(reply)
#               except StopIteration as e:
#                   return e.value
#               reply = await self._do(self.t.send(req, ticks_ms()))
#
#   line = MeterLine(r, w, HdlcTransport(hdlc.Link(hdlc.server_address(1, 0x10), 0x10)))
#   c = Client(mechanism=acse.MECH_LLS, password=b"12345678")
#   await line.open(); await line.run(c.associate())
#   wh, unit = await line.run(c.read_register("1-0:1.8.0"))
#   n = await line.run(c.read_profile("1-0:99.1.0", t0, t1, on_row=journal.add))
#   await line.run(c.release()); await line.close()
#
# dlms.security (and AES-GCM) loads only with a SecurityContext: a meter
# without ciphering never pays its heap. The wrapper transport is in
# dlms.wrapper_transport, also reachable here as WrapperTransport.
import os

from compat import const

from dlms import acse, apdu, axdr, cosem
from dlms.acse import AssociationError
from dlms.apdu import (AccessError, ApduError, BlockTransferError, DlmsError, Response,
                       ServiceException)
from dlms.obis import Obis

_ASSOCIATION_LN_CLASS = const(15)
_REPLY_TO_HLS = const(1)  # method 1: reply_to_HLS_authentication

_CIPHER_GLO = const(0)  # service-specific glo-ciphering (C8, CB, ...)
_CIPHER_GENERAL = const(1)  # general-glo-ciphering (DB)

_WAIT_NONE = const(0)
_WAIT_OPEN = const(1)
_WAIT_RESPONSE = const(2)
_WAIT_CLOSE = const(3)
_MAX_CACHE = const(32)
_CIPHER_OVERHEAD = const(32)  # tag, length, SC, IC, GCM tag, general header
_PIECE = const(96)  # octets fed to an ArrayStream at a time


class TransportError(DlmsError):
    # the link failed while a response was awaited; reason: "disconnected"
    # (detail: the link's reason), "no_response", "too_long", "llc",
    # "wrapper", "timeout", "state"
    def __init__(self, reason, detail=None):
        super().__init__(reason if detail is None else "%s: %s" % (reason, detail))
        self.reason = reason
        self.detail = detail


class CipheringError(DlmsError):
    # a ciphered response that does not open, or one the policy refuses;
    # reason: "authentication" (wrong GCM tag), "replay" (invocation counter
    # not above the last), "security" (malformed, unknown key), "policy"
    # (plain APDU in a ciphered association, wrong system title); cause: the
    # dlms.security / aesgcm exception if any
    def __init__(self, reason, cause=None):
        super().__init__(reason if cause is None else "%s: %s" % (reason, cause))
        self.reason = reason
        self.cause = cause


# ---- transports --------------------------------------------------------


class _Transport:
    # open/send/close return byte strings to write and start a wait;
    # receive_data/tick feed the line and the clock; ready() says the wait is
    # over, response() then hands out the APDU (send) or None, or raises
    # TransportError.
    def __init__(self):
        self._wait = _WAIT_NONE
        self._apdu = None
        self._failure = None
        self.stray = 0  # APDUs nobody waited for
        self.errors = 0  # line errors the link recovered from

    def _start(self, what):
        self._wait = what
        self._apdu = None
        self._failure = None

    def _done(self, apdu=None):
        self._apdu = apdu
        self._wait = _WAIT_NONE

    def _fail(self, reason, detail=None):
        if self._wait != _WAIT_NONE:
            self._failure = TransportError(reason, detail)
            self._wait = _WAIT_NONE

    def ready(self):
        return self._wait == _WAIT_NONE

    def response(self):
        if self._failure is not None:
            e = self._failure
            self._failure = None
            raise e
        a = self._apdu
        self._apdu = None
        return a


class HdlcTransport(_Transport):
    # APDUs over a dlms.hdlc.Link, with the LLC header: E6 E6 00 on requests,
    # E6 E7 00 on responses. The link hands over each I frame (its reassembly
    # is turned off) and the segments of a response are gathered here in one
    # buffer of max_apdu octets (+ LLC), allocated once: no buffer grows while
    # a long profile streams. Keep max_apdu equal to the Client's max_pdu.
    def __init__(self, link, max_apdu=1024):
        super().__init__()
        self.link = link
        link.reassemble = False
        self._buf = bytearray(max_apdu + 3)
        self._n = 0
        self._over = False  # this response is longer than the buffer

    def open(self, now_ms=None):
        self._start(_WAIT_OPEN)
        return [self.link.connect(now_ms)]

    def close(self, now_ms=None):
        self._start(_WAIT_CLOSE)
        return [self.link.disconnect(now_ms)]

    def send(self, apdu, now_ms=None):
        self._start(_WAIT_RESPONSE)
        self._n = 0
        self._over = False
        info = bytearray(len(apdu) + 3)
        info[0] = info[1] = 0xE6  # E6 E6 00
        info[3:] = apdu
        from dlms import hdlc  # loaded with the link: a dict lookup
        try:
            return self.link.send(info, now_ms)
        except hdlc.HdlcError as e:
            self._fail("state", e)
            return []

    def receive_data(self, data, now_ms=None):
        out = self.link.receive_data(data, now_ms)
        self._pump()
        return out

    def tick(self, now_ms):
        out = self.link.tick(now_ms)
        self._pump()
        return out

    def _segment(self, ev):
        info = ev.info
        k = len(info)
        n = self._n
        if n + k > len(self._buf):
            self._over = True
        elif not self._over:
            self._buf[n:n + k] = info
            self._n = n + k
        if ev.more:
            return
        n = self._n
        self._n = 0
        if self._over:
            self._over = False
            self._fail("too_long", len(self._buf) - 3)
        elif n < 3 or self._buf[0] != 0xE6 or self._buf[1] != 0xE7 or self._buf[2] != 0:
            self._fail("llc", bytes(self._buf[0:min(n, 3)]))
        else:
            self._done(memoryview(self._buf)[3:n])

    def _pump(self):
        from dlms import hdlc
        link = self.link
        while True:
            ev = link.next_event()
            if ev is None:
                return
            if isinstance(ev, hdlc.Data):
                if ev.ui:
                    self.stray += 1  # a push: not for this client
                elif self._wait != _WAIT_RESPONSE:
                    self.stray += 1
                else:
                    self._segment(ev)
            elif isinstance(ev, hdlc.Connected):
                if self._wait == _WAIT_OPEN:
                    self._done()
            elif isinstance(ev, hdlc.Disconnected):
                if self._wait == _WAIT_CLOSE:
                    self._done()
                else:
                    self._fail("disconnected", ev.reason)
            elif isinstance(ev, hdlc.Error):
                self.errors += 1
                if ev.fatal:
                    self._fail(ev.reason, ev.detail)


def __getattr__(name):
    # WrapperTransport (IEC 62056-47 over TCP) loads on first use
    if name != "WrapperTransport":
        raise AttributeError(name)
    from dlms.wrapper_transport import WrapperTransport

    return WrapperTransport


def run(conversation, exchange):
    # Drive a conversation with a blocking exchange(request) -> response
    # (tests, host tools, a synchronous adapter) -> its result.
    reply = None
    while True:
        try:
            req = conversation.send(reply)
        except StopIteration as e:
            return e.value
        reply = exchange(req)


# ---- the client --------------------------------------------------------


class Client:
    # mechanism: acse.MECH_NONE, MECH_LLS (password) or MECH_HLS_GMAC (needs
    # security). security: a dlms.security.SecurityContext (our system title,
    # keys, invocation counter; set its dedicated_key for general-ded
    # ciphering); with it the association is ciphered (context LN with
    # ciphering) unless cipher_apdus is False. ciphering: 0 (_CIPHER_GLO)
    # or 1 (_CIPHER_GENERAL); security_control: SC byte of our APDUs (0x30:
    # authenticated and encrypted, suite 0). max_pdu: proposed
    # client-max-receive-pdu-size (bounds every block the meter sends).
    # max_get_size bounds a non-streamed GET; max_row one streamed row.
    def __init__(self, mechanism=acse.MECH_NONE, password=None, security=None,
                 conformance=acse.DEFAULT_CONFORMANCE, max_pdu=1024, ciphering=_CIPHER_GLO,
                 security_control=0x30, cipher_apdus=True, max_get_size=16384, max_row=1024,
                 max_stream_size=1 << 20, challenge_len=16, rng=None, invoke_id=1,
                 rotate_invoke=False, high_priority=True):
        if mechanism == acse.MECH_HLS_GMAC and security is None:
            raise DlmsError("HLS-GMAC needs a SecurityContext")
        self.mechanism = mechanism
        self.password = password.encode() if isinstance(password, str) else password
        self.security = security
        self.conformance = conformance
        self.max_pdu = max_pdu
        self.ciphering = ciphering
        self.security_control = security_control
        self.ciphered = security is not None and cipher_apdus
        self.max_get_size = max_get_size
        self.max_row = max_row
        self.max_stream_size = max_stream_size
        self.challenge_len = challenge_len
        self.rng = rng or os.urandom
        self.invoke_id = invoke_id & 0x0F
        self.rotate_invoke = rotate_invoke
        self.high_priority = high_priority
        self.release_user_information = True  # ciphered RLRQ carries an InitiateRequest
        self._scalers = {}  # (class id, LN) -> (scaler, unit)
        self._reset()

    def _reset(self):
        self.associated = False
        self.server_title = None
        self.negotiated = 0  # conformance
        self.server_max_pdu = 0
        self.vaa_name = None
        self._dedicated = False  # general-ded from now on

    # -- plumbing --

    def _invoke(self):
        if self.rotate_invoke:
            self.invoke_id = (self.invoke_id + 1) & 0x0F
        return apdu.invoke_id_and_priority(self.invoke_id, self.high_priority)

    def _check(self):
        if not self.associated:
            raise AssociationError("not_associated")

    def _protect(self, plain, init=False):
        # init: an InitiateRequest goes glo-ciphered (0x21), whatever the services use
        if not self.ciphered:
            return plain
        from dlms import security  # loaded with the SecurityContext: a lookup

        ded = self._dedicated and not init
        general = not init and (ded or self.ciphering == _CIPHER_GENERAL)
        try:
            return self.security.protect(self.security_control, plain, general, ded)
        except security.SecurityError as e:
            raise CipheringError("security", e)

    def _unprotect(self, data):
        from dlms import security

        try:
            u = self.security.unprotect(data, self.server_title)
        except security.InvocationCounterError as e:
            raise CipheringError("replay", e)
        except security.AuthenticationError as e:
            raise CipheringError("authentication", e)
        except security.SecurityError as e:
            raise CipheringError("security", e)
        if u.system_title != self.server_title:
            raise CipheringError("policy", "system title of another server")
        return u.apdu

    def _open(self, resp, values=True):
        # a response APDU -> decoded plain APDU; ServiceException raised
        if not len(resp):
            raise ApduError("empty")
        tag = resp[0]
        if self.ciphered:
            from dlms import security

            if security.is_ciphered(tag):
                resp = self._unprotect(resp)
            elif tag != apdu.EXCEPTION_RESPONSE and tag != apdu.CONFIRMED_SERVICE_ERROR:
                raise CipheringError("policy", "plain APDU 0x%02x in a ciphered association" % tag)
        try:
            r = apdu.decode(resp, values)
        except ApduError as e:
            if e.reason == "unknown_tag" and not self.ciphered:
                from dlms import security  # only to name the refusal

                if security.is_ciphered(tag):
                    raise CipheringError("policy", "ciphered APDU outside a ciphered association")
            raise
        if isinstance(r, ServiceException):
            raise r
        return r

    def _call(self, plain, tag, invoke, values=True):
        # one confirmed service: protect, exchange, open, check
        resp = yield self._protect(plain)
        r = self._open(resp, values)
        if not isinstance(r, Response) or r.tag != tag:
            raise ApduError("unexpected", getattr(r, "tag", None))
        if (r.invoke ^ invoke) & 0x0F:
            raise ApduError("unexpected", "invoke id %d" % (r.invoke & 0x0F))
        return r

    # -- association --

    def associate(self):
        # -> acse.InitiateResponse (also kept: negotiated, server_max_pdu)
        self._reset()
        mech = self.mechanism
        sec = self.security
        ctos = None
        auth = None
        if mech == acse.MECH_LLS:
            auth = self.password
        elif mech == acse.MECH_HLS_GMAC:
            ctos = bytes(self.rng(self.challenge_len))
            auth = ctos
        ded = sec.dedicated_key if self.ciphered else None
        init = acse.initiate_request(self.conformance, self.max_pdu, ded)
        if self.ciphered:
            init = self._protect(init, True)
        title = sec.system_title if (self.ciphered or mech == acse.MECH_HLS_GMAC) else None
        resp = yield acse.aarq(init, mech, auth, title, self.ciphered)
        a = apdu.decode(resp)
        if isinstance(a, ServiceException):
            raise AssociationError("protocol", a)
        if not isinstance(a, acse.Aare):
            raise ApduError("unexpected", getattr(a, "tag", None))
        ui = a.user_information
        if not a.accepted:
            err = None
            if ui and ui[0] == apdu.CONFIRMED_SERVICE_ERROR:
                try:
                    err = apdu.decode(ui)
                except ApduError:
                    pass
            raise AssociationError("rejected", None, a.result, a.diagnostic, a.source, err)
        want = acse.CONTEXT_LN_CIPHERED if self.ciphered else acse.CONTEXT_LN
        if a.context != want:
            raise AssociationError("protocol", "application context %d, proposed %d" % (a.context, want))
        if self.ciphered or mech == acse.MECH_HLS_GMAC:
            if a.system_title is None or len(a.system_title) != 8:
                raise AssociationError("protocol", "no server system title")
            self.server_title = a.system_title
        if not ui:
            raise AssociationError("protocol", "no InitiateResponse")
        if ui[0] == acse.GLO_INITIATE_RESPONSE:
            if not self.ciphered:
                raise CipheringError("policy", "ciphered InitiateResponse")
            ui = self._unprotect(ui)
        elif self.ciphered and ui[0] != apdu.CONFIRMED_SERVICE_ERROR:
            raise CipheringError("policy", "plain InitiateResponse in a ciphered association")
        if len(ui) and ui[0] == apdu.CONFIRMED_SERVICE_ERROR:
            raise AssociationError("initiate", None, None, None, acse.SOURCE_USER, apdu.decode(ui))
        ir = acse.parse_initiate_response(ui)
        self.negotiated = ir.conformance
        self.server_max_pdu = ir.max_pdu
        self.vaa_name = ir.vaa_name
        self._dedicated = ded is not None
        if mech == acse.MECH_HLS_GMAC:
            from dlms import security

            if not a.challenge:
                raise AssociationError("protocol", "no StoC challenge")
            try:
                f = sec.hls_gmac_response(security.SC_AUTHENTICATION, a.challenge)
            except security.SecurityError as e:
                raise CipheringError("security", e)
            inv = self._invoke()
            ostr = bytearray((axdr.OCTET_STRING,))  # by hand: the encoder loads only for SET
            axdr.put_length(ostr, len(f))
            ostr.extend(f)
            # the current association: 0-0:40.0.0.255
            req = apdu.action_request(_ASSOCIATION_LN_CLASS, b"\x00\x00\x28\x00\x00\xff", _REPLY_TO_HLS,
                                      bytes(ostr), inv)
            r = yield from self._call(req, apdu.ACTION_RESPONSE, inv)
            if r.result != apdu.SUCCESS:
                raise AssociationError("authentication", "meter refused f(StoC): %s"
                                       % (apdu.action_result_name(r.result) or r.result))
            if not isinstance(r.value, bytes):
                raise AssociationError("authentication", "no f(CtoS)")
            try:
                sec.verify_hls_gmac(r.value, ctos, self.server_title)
            except (security.SecurityError, security.AuthenticationError) as e:
                raise AssociationError("authentication", "meter's f(CtoS): %s" % e)
        self.associated = True
        return ir

    def release(self):
        # RLRQ -> RLRE; -> the release reason
        ui = None
        if self.ciphered and self.associated and self.release_user_information:
            ui = self._protect(acse.initiate_request(self.conformance, self.max_pdu), True)
        self.associated = False
        resp = yield acse.rlrq(acse.RELEASE_NORMAL, ui)
        r = apdu.decode(resp)
        if isinstance(r, ServiceException):
            raise r
        if not isinstance(r, acse.Rlre):
            raise ApduError("unexpected", getattr(r, "tag", None))
        rui = r.user_information
        if rui and self.ciphered and rui[0] == acse.GLO_INITIATE_RESPONSE:
            self._unprotect(rui)  # authenticates the RLRE, advances the counter
        self._reset()
        return r.reason

    # -- services --

    def _blocks(self, r, invoke, sink):
        # a get-response-with-datablock and those after it: each raw-data to
        # sink(raw) until the last block -> total octets
        total = 0
        block = r.block
        while True:
            if r.kind != apdu.DATABLOCK:
                if r.kind == apdu.NORMAL and r.result is not None:
                    raise AccessError(r.result, "block %d" % (block + 1))
                raise ApduError("unexpected", "get-response choice %d" % r.kind)
            if r.result is not None:
                raise AccessError(r.result, "block %d" % r.block)
            if r.block != block:
                raise BlockTransferError("block %d, expected %d" % (r.block, block))
            total += len(r.raw)
            sink(r.raw)
            if r.last:
                return total
            r = yield from self._call(apdu.get_request_next(block, invoke), apdu.GET_RESPONSE,
                                      invoke, False)
            block += 1

    def get(self, obis, class_id, attr, access=None):
        # -> the decoded attribute value; block transfer is followed to the end,
        # up to max_get_size octets. access: (selector, parameters bytes)
        self._check()
        inv = self._invoke()
        r = yield from self._call(apdu.get_request(class_id, obis, attr, access, inv),
                                  apdu.GET_RESPONSE, inv)
        if r.kind == apdu.NORMAL:
            if r.result is not None:
                raise AccessError(r.result, _what(obis, attr))
            return r.value
        buf = bytearray()
        limit = self.max_get_size

        def sink(raw):
            if len(buf) + len(raw) > limit:
                raise BlockTransferError("value longer than %d octets" % limit)
            buf.extend(raw)

        yield from self._blocks(r, inv, sink)
        return _decode_all(buf)

    def get_stream(self, obis, class_id, attr, on_row, access=None):
        # An array attribute (a profile buffer) decoded element by element as
        # the blocks arrive: on_row(element) for each -> how many. Only one
        # block and the unfinished element are held.
        self._check()
        inv = self._invoke()
        stream = axdr.ArrayStream(self.max_row, block=_PIECE)
        state = [0, 0]  # rows, octets
        limit = self.max_stream_size

        def sink(raw):
            state[1] += len(raw)
            if state[1] > limit:
                raise BlockTransferError("stream longer than %d octets" % limit)
            try:
                # small pieces: the stream's buffer stays near one row
                mv = memoryview(raw)  # pieces without copies: the stream copies once
                for i in range(0, len(raw), _PIECE):
                    for row in stream.feed(mv[i:i + _PIECE]):
                        state[0] += 1
                        on_row(row)
            except axdr.AxdrError as e:
                raise ApduError("bad_data", e)

        r = yield from self._call(apdu.get_request(class_id, obis, attr, access, inv),
                                  apdu.GET_RESPONSE, inv, False)
        if r.kind == apdu.NORMAL:
            if r.result is not None:
                raise AccessError(r.result, _what(obis, attr))
            sink(r.data)
        else:
            yield from self._blocks(r, inv, sink)
        try:
            stream.close()
        except axdr.AxdrError as e:
            raise BlockTransferError(str(e))
        return state[0]

    def get_with_list(self, items, max_items=10):
        # items: (obis, class_id, attr) or (obis, class_id, attr, access) ->
        # one entry per item: the value, or an AccessError (not raised).
        # Without multiple-references negotiated, one GET per item.
        self._check()
        out = []
        if not self.negotiated & acse.CONF_MULTIPLE_REFERENCES:
            for it in items:
                try:
                    v = yield from self.get(it[0], it[1], it[2], it[3] if len(it) > 3 else None)
                except AccessError as e:
                    v = e
                out.append(v)
            return out
        for k in range(0, len(items), max_items):
            part = items[k:k + max_items]
            inv = self._invoke()
            req = apdu.get_request_with_list(
                [(it[1], it[0], it[2], it[3] if len(it) > 3 else None) for it in part], inv)
            r = yield from self._call(req, apdu.GET_RESPONSE, inv)
            if r.kind == apdu.DATABLOCK:
                buf = bytearray((apdu.GET_RESPONSE, apdu.WITH_LIST, inv))
                limit = self.max_get_size

                def sink(raw):
                    if len(buf) + len(raw) > limit:
                        raise BlockTransferError("list longer than %d octets" % limit)
                    buf.extend(raw)

                yield from self._blocks(r, inv, sink)
                r = apdu.decode(buf)
            if r.kind != apdu.WITH_LIST or len(r.items) != len(part):
                raise ApduError("unexpected", "get-response-with-list of %r items"
                                % (None if r.items is None else len(r.items)))
            for i in range(len(part)):
                res, v = r.items[i]
                out.append(v if res is None else AccessError(res, _what(part[i][0], part[i][2])))
        return out

    def set(self, obis, class_id, attr, value, access=None):
        # value: A-XDR encoded bytes, or (tag, value) for axdr.encode. A value
        # too long for the meter's PDU goes in blocks, if negotiated.
        from dlms import client_set

        return client_set.set(self, obis, class_id, attr, value, access)

    def action(self, obis, class_id, method, params=None):
        # -> the decoded return parameters, or None. params: A-XDR bytes or (tag, value)
        from dlms import client_set

        return client_set.action(self, obis, class_id, method, params)

    def _room(self):
        # the largest request APDU the meter takes, before ciphering
        room = self.server_max_pdu or 0xFFFF
        return room - _CIPHER_OVERHEAD if self.ciphered else room

    # -- COSEM helpers --

    def read_register(self, obis, class_id=cosem.REGISTER, exp=None):
        # Register, Extended or Demand register -> (value, unit code) with the
        # scaler applied: value * 10**scaler as an int for scaler >= 0 and a
        # float below; with exp, an exact int in units of 10**exp (cosem.scale).
        # scaler_unit is read once per object and kept.
        key = (class_id, apdu.ln_bytes(obis))
        su = self._scalers.get(key)
        if su is None:
            v = yield from self.get(obis, class_id, cosem.DEMAND_SCALER_UNIT
                                    if class_id == cosem.DEMAND_REGISTER else cosem.REGISTER_SCALER_UNIT)
            su = _cosem(cosem.scaler_unit, v)
            if len(self._scalers) >= _MAX_CACHE:
                self._scalers.clear()
            self._scalers[key] = su
        raw = yield from self.get(obis, class_id, cosem.REGISTER_VALUE)
        scaler, unit = su
        if exp is not None:
            return _cosem(cosem.scale, raw, scaler, exp), unit
        if type(raw) is not int and type(raw) is not float:
            raise ApduError("bad_data", "register value %r" % (raw,))
        if scaler >= 0:
            return raw * 10 ** scaler, unit
        return raw / 10 ** -scaler, unit

    def forget_scalers(self):
        self._scalers.clear()

    def read_clock(self, obis=cosem.CLOCK_LN):
        # -> axdr.DateTime
        v = yield from self.get(obis, cosem.CLOCK, cosem.CLOCK_TIME)
        return _cosem(cosem.as_date_time, v)

    def set_clock(self, dt, obis=cosem.CLOCK_LN):
        yield from self.set(obis, cosem.CLOCK, cosem.CLOCK_TIME, _cosem(cosem.clock_time_data, dt))

    def read_capture_objects(self, obis):
        # -> [(class_id, Obis, attribute, data_index)]
        v = yield from self.get(obis, cosem.PROFILE_GENERIC, cosem.PROFILE_CAPTURE_OBJECTS)
        return _cosem(cosem.parse_capture_objects, v)

    def read_profile(self, obis, from_dt, to_dt, on_row=None, columns=()):
        # Profile generic buffer rows from from_dt to to_dt (range selective
        # access on the clock column). With on_row: streamed, -> row count;
        # without: -> the list of rows (keep the range small).
        access = (cosem.ACCESS_RANGE, _cosem(cosem.range_descriptor, from_dt, to_dt, None, columns))
        rows = None
        if on_row is None:
            rows = []
            on_row = rows.append
        n = yield from self.get_stream(obis, cosem.PROFILE_GENERIC, cosem.PROFILE_BUFFER, on_row, access)
        return n if rows is None else rows


def _what(obis, index):
    try:
        return "%s/%d" % (Obis.from_bytes(apdu.ln_bytes(obis)), index)
    except DlmsError:
        return str(index)


def _cosem(fn, *args):
    try:
        return fn(*args)
    except cosem.CosemError as e:
        raise ApduError("bad_data", e)


def _decode_all(buf):
    try:
        v, end = axdr.decode(buf)
    except axdr.AxdrError as e:
        raise ApduError("bad_data", e)
    if end != len(buf):
        raise ApduError("trailing", len(buf) - end)
    return v
