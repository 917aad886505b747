# A scripted DLMS meter at the APDU level for the client tests
# (test_dlms_client.py), on both interpreters. It answers AARQ, GET (normal,
# next, with-list), SET (normal and block transfer), ACTION (HLS-GMAC pass 3
# and a test method) and RLRQ, ciphered when the association is. Responses
# are laid out byte by byte here (BER, A-XDR headers per Green Book 9.3/9.4);
# only the ciphering uses lib's dlms.security, as a server. Knobs let a test
# break one thing at a time.
import struct

from dlms import axdr
from dlms.security import SecurityContext

SERVER_TITLE = b"FAKE0001"
CLIENT_TITLE = b"CLNT0001"
EK = bytes(range(16))
AK = bytes(range(0xD0, 0xE0))
PASSWORD = b"12345678"

CLOCK = (8, b"\x00\x00\x01\x00\x00\xff", 2)
ENERGY = (3, b"\x01\x00\x01\x08\x00\xff")  # 1-0:1.8.0.255, Wh, scaler 0
VOLTAGE = (3, b"\x01\x00\x20\x07\x00\xff")  # 1-0:32.7.0.255, V, scaler -1
DEMAND = (5, b"\x01\x00\x01\x04\x00\xff")  # 1-0:1.4.0.255, W, scaler 1
PROFILE = (7, b"\x01\x00\x63\x01\x00\xff")  # 1-0:99.1.0.255
BIG = (1, b"\x00\x00\x80\x00\x00\xff")  # 0-0:128.0.0.255, a long octet-string
METHOD = (9, b"\x00\x00\x0a\x00\x00\xff")  # a script table: method 1 returns a value
ASSOCIATION = (15, b"\x00\x00\x28\x00\x00\xff")

ROW_LEN = 26  # 02 03 | 09 0C date-time(12) | 06 u32 | 06 u32
T0 = 1750000000  # first row, UTC seconds


def h(text):
    return bytes.fromhex(text)


def ber(tag, content):
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    return bytes((tag, 0x81, n)) + content


def row(i):
    # profile row i: {date-time, import Wh, export Wh}; 15 minutes apart
    dt = axdr.DateTime.from_unix(T0 + 900 * i, 0, 0).to_octets()
    return (b"\x02\x03\x09\x0c" + dt + b"\x06" + struct.pack(">I", 1000000 + 7 * i)
            + b"\x06" + struct.pack(">I", 5000 + i))


class FakeMeter:
    def __init__(self, mechanism=0, password=PASSWORD, ciphered=False, block_size=200,
                 rows=1000, max_pdu=1024, conformance=0x00121D, first_block=1, ic=100):
        self.mechanism = mechanism
        self.password = password
        self.ciphered = ciphered
        self.block_size = block_size
        self.rows = rows
        self.max_pdu = max_pdu
        self.conformance = conformance
        self.first_block = first_block
        self.sec = SecurityContext(SERVER_TITLE, EK, AK, ic)
        self.values = {
            CLOCK: b"\x09\x0c" + axdr.DateTime(2025, 6, 21, 12, 0, 7, 0, -120, 0x80).to_octets(),
            ENERGY + (2,): b"\x06\x00\x98\xe6\xdf",  # 10020575
            ENERGY + (3,): b"\x02\x02\x0f\x00\x16\x1e",
            VOLTAGE + (2,): b"\x12\x08\xf8",  # 2296
            VOLTAGE + (3,): b"\x02\x02\x0f\xff\x16\x23",
            DEMAND + (2,): b"\x05\x00\x00\x01\x2c",  # 300
            DEMAND + (4,): b"\x02\x02\x0f\x01\x16\x1b",
            BIG + (2,): b"\x09\x82\x02\x58" + bytes(range(200)) * 3,  # 600 octets
        }
        self.denied = set()  # (class, ln, attr) answered read-write-denied
        self.gets = 0
        self.sets = []  # (class, ln, attr, data) written
        self.associated = False
        self.ctos = None
        self.stoc = b"StoC0123456789ab"
        self.client_title = None
        self.dedicated_key = None
        # knobs
        self.aare_result = None  # (result, diagnostic) to reject with
        self.initiate_error = None  # bytes of a confirmed-service-error instead of InitiateResponse
        self.bad_f_ctos = False
        self.skip_block = False
        self.wrong_invoke = False
        self.replay = False  # ciphered answers reuse one invocation counter
        self.break_tag = False
        self.plain_answers = False
        self.exception = None  # bytes of an exception-response for the next request
        self._long = None
        self._set_blocks = None
        self._last_ic = None

    # -- plumbing --

    def exchange(self, req):
        req = bytes(req)
        if self.exception is not None:
            e = self.exception
            self.exception = None
            return e
        tag = req[0]
        if tag == 0x60:
            return self._aarq(req)
        if tag == 0x62:
            return self._rlrq(req)
        if tag in (0xC0, 0xC1, 0xC3):
            if self.ciphered:
                return h("d80101")
            return self._xdlms(req)
        if tag in (0xC8, 0xC9, 0xCB, 0xDB, 0xDC):
            try:
                u = self.sec.unprotect(req, self.client_title)
            except ValueError:  # SecurityError, AuthenticationError
                return h("d80105")
            reply = self._xdlms(u.apdu)
            if reply[0] == 0xD8 or self.plain_answers:
                return reply
            return self._protect(reply, tag)
        return h("d80202")

    def _protect(self, reply, req_tag):
        general = req_tag in (0xDB, 0xDC)
        ded = req_tag == 0xDC
        if self.replay:
            if self._last_ic is None:
                self._last_ic = self.sec.invocation_counter
            self.sec.invocation_counter = self._last_ic
        out = bytearray(self.sec.protect(0x30, reply, general=general, dedicated=ded))
        if self.break_tag:
            out[-1] ^= 1
        return bytes(out)

    # -- ACSE --

    def _aarq(self, req):
        self.associated = False
        fields = {}
        p = 2
        while p < len(req):
            tag, n = req[p], req[p + 1]
            fields[tag] = req[p + 2:p + 2 + n]
            p += 2 + n
        ctx = fields[0xA1][-1]
        mech = fields[0x8B][-1] if 0x8B in fields else 0
        auth = fields[0xAC][2:] if 0xAC in fields else None
        if 0xA6 in fields:
            self.client_title = fields[0xA6][2:]
        ui = fields[0xBE][2:]
        if self.aare_result is not None:
            return self._aare(ctx, self.aare_result[0], self.aare_result[1], None)
        if mech != self.mechanism:
            return self._aare(ctx, 1, 11, None)
        if mech == 1 and auth != self.password:
            return self._aare(ctx, 1, 13, None)
        if self.ciphered:
            try:
                ui = self.sec.unprotect(ui, self.client_title).apdu
            except ValueError:  # SecurityError, AuthenticationError
                return self._aare(ctx, 1, 1, None)
        if ui[1]:  # a dedicated key
            self.dedicated_key = ui[3:3 + ui[2]]
            self.sec.dedicated_key = self.dedicated_key
        init = self.initiate_error
        if init is None:
            init = (b"\x08\x00\x06\x5f\x1f\x04\x00" + self.conformance.to_bytes(3, "big")
                    + self.max_pdu.to_bytes(2, "big") + b"\x00\x07")
            if self.ciphered:
                init = self.sec.protect(0x30, init)
        if mech == 5:
            self.ctos = auth
            return self._aare(ctx, 0, 14, init, True)
        self.associated = True
        return self._aare(ctx, 0, 0, init)

    def _aare(self, ctx, result, diag, init, hls=False):
        body = ber(0xA1, ber(0x06, h("60857405080101")[:-1] + bytes((ctx,))))
        body += ber(0xA2, ber(0x02, bytes((result,))))
        body += ber(0xA3, ber(0xA1, ber(0x02, bytes((diag,)))))
        if self.ciphered or hls:
            body += ber(0xA4, ber(0x04, SERVER_TITLE))
        if hls:
            body += h("88020780") + ber(0x89, h("60857405080205"))
            body += ber(0xAA, ber(0x80, self.stoc))
        if init is not None:
            body += ber(0xBE, ber(0x04, init))
        return ber(0x61, body)

    def _rlrq(self, req):
        self.associated = False
        if self.ciphered and len(req) > 5:
            ui = req[9:]  # 62 len 80 01 00 BE len 04 len ui
            self.sec.unprotect(ui, self.client_title)
            init = self.sec.protect(0x30, h("0800065f1f0400") + self.conformance.to_bytes(3, "big")
                                    + self.max_pdu.to_bytes(2, "big") + h("0007"))
            return ber(0x63, h("800100") + ber(0xBE, ber(0x04, init)))
        return h("6303800100")

    # -- xDLMS --

    def _xdlms(self, req):
        tag, kind, inv = req[0], req[1], req[2]
        if self.wrong_invoke:
            inv ^= 1
        if not self.associated and not (tag == 0xC3 and self.ctos is not None):
            return h("d80101")
        if tag == 0xC0:
            return self._get(kind, inv, req)
        if tag == 0xC1:
            return self._set(kind, inv, req)
        return self._action(inv, req)

    def _attr(self, req, p):
        key = (struct.unpack_from(">H", req, p)[0], bytes(req[p + 2:p + 8]), req[p + 8])
        p += 9
        sel = None
        if req[p]:
            sel = req[p + 1]
            _, p = axdr.decode(req, p + 2)
        else:
            p += 1
        return key, sel, p

    def _value(self, key, sel):
        # -> (Data bytes or None, data-access-result)
        self.gets += 1
        if key in self.denied:
            return None, 3
        if key == PROFILE + (2,):
            return "profile", 0
        v = self.values.get(key)
        if v is None:
            return None, 4
        return v, 0

    def _get(self, kind, inv, req):
        if kind == 1:
            key, sel, _ = self._attr(req, 3)
            v, dar = self._value(key, sel)
            if v is None:
                return bytes((0xC4, 1, inv, 1, dar))
            if v == "profile":
                n = self.rows
                hdr = b"\x01" + axdr.encode_length(n)
                self._long = [hdr, len(hdr) + ROW_LEN * n, 0, self.first_block]
                return self._next_block(inv)
            if len(v) + 4 > self.block_size:
                self._long = [v, len(v), 0, self.first_block]
                return self._next_block(inv)
            return bytes((0xC4, 1, inv, 0)) + v
        if kind == 2:
            block = struct.unpack_from(">I", req, 3)[0]
            if self._long is None or block != self._long[3] - 1:
                return bytes((0xC4, 2, inv, 1)) + struct.pack(">I", block) + b"\x01\x13"
            if self.skip_block:
                self._long[3] += 1
            return self._next_block(inv)
        if kind == 3:
            n = req[3]
            p = 4
            out = bytearray((0xC4, 3, inv, n))
            for _ in range(n):
                key, sel, p = self._attr(req, p)
                v, dar = self._value(key, sel)
                out.extend(b"\x01" + bytes((dar,)) if v is None else b"\x00" + v)
            if len(out) > self.block_size:
                body = bytes(out[3:])
                self._long = [body, len(body), 0, self.first_block]
                return self._next_block(inv)
            return bytes(out)
        return h("d80202")

    def _chunk(self, start, end):
        # octets [start, end) of the long value; profile rows made on demand
        data, total = self._long[0], self._long[1]
        if total == len(data):
            return data[start:end]
        hl = len(data)
        out = bytearray()
        if start < hl:
            out.extend(data[start:min(end, hl)])
            start = hl
        i = (start - hl) // ROW_LEN
        while start < end:
            r = row(i)
            off = start - hl - i * ROW_LEN
            take = min(ROW_LEN - off, end - start)
            out.extend(r[off:off + take])
            start += take
            i += 1
        return bytes(out)

    def _next_block(self, inv):
        lg = self._long
        start = lg[2]
        end = min(lg[1], start + self.block_size)
        chunk = self._chunk(start, end)
        lg[2] = end
        last = end >= lg[1]
        block = lg[3]
        lg[3] += 1
        if last:
            self._long = None
        return (bytes((0xC4, 2, inv, 1 if last else 0)) + struct.pack(">I", block) + b"\x00"
                + axdr.encode_length(len(chunk)) + chunk)

    def _set(self, kind, inv, req):
        if kind == 1:
            key, sel, p = self._attr(req, 3)
            if key in self.denied:
                return bytes((0xC5, 1, inv, 3))
            self.sets.append(key + (bytes(req[p:]),))
            return bytes((0xC5, 1, inv, 0))
        if kind == 2:
            key, sel, p = self._attr(req, 3)
            last = req[p]
            n, q = axdr.decode_length(req, p + 5)
            self._set_blocks = [key, bytearray(req[q:q + n]), 1]
            if last:
                return self._set_done(inv)
            return bytes((0xC5, 2, inv)) + struct.pack(">I", 1)
        if kind == 3:
            last = req[3]
            block = struct.unpack_from(">I", req, 4)[0]
            n, q = axdr.decode_length(req, 8)
            sb = self._set_blocks
            if sb is None or block != sb[2] + 1:
                return bytes((0xC5, 3, inv, 19)) + struct.pack(">I", block)
            sb[1].extend(req[q:q + n])
            sb[2] = block
            if last:
                return self._set_done(inv)
            return bytes((0xC5, 2, inv)) + struct.pack(">I", block)
        return h("d80202")

    def _set_done(self, inv):
        key, data, block = self._set_blocks
        self._set_blocks = None
        self.sets.append(key + (bytes(data),))
        return bytes((0xC5, 3, inv, 0)) + struct.pack(">I", block)

    def _action(self, inv, req):
        key = (struct.unpack_from(">H", req, 3)[0], bytes(req[5:11]), req[11])
        params = None
        if req[12]:
            params, _ = axdr.decode(req, 13)
        if key == ASSOCIATION + (1,) and self.ctos is not None:
            want = self._gmac(self.client_title, params[1:5], self.stoc)
            if params != want:
                self.ctos = None
                return bytes((0xC7, 1, inv, 3, 0))
            self.associated = True
            ic = self.sec.invocation_counter
            self.sec.invocation_counter += 1
            f = self._gmac(SERVER_TITLE, ic.to_bytes(4, "big"), self.ctos)
            if self.bad_f_ctos:
                f = f[:-1] + bytes((f[-1] ^ 1,))
            self.ctos = None
            return bytes((0xC7, 1, inv, 0, 1, 0)) + axdr.encode(axdr.OCTET_STRING, f)
        if key == METHOD + (1,):
            return bytes((0xC7, 1, inv, 0, 1, 0)) + axdr.encode(axdr.LONG_UNSIGNED, 42)
        if key == METHOD + (2,):
            return bytes((0xC7, 1, inv, 0, 1, 1, 11))
        return bytes((0xC7, 1, inv, 3, 0))

    def _gmac(self, title, icb, challenge):
        g = SecurityContext(title, EK, AK, int.from_bytes(bytes(icb), "big"))
        return g.hls_gmac_response(0x10, challenge)

