# GPL note: gurux-dlms is GPL-2.0; it is imported only here in host_tools/sim/, never from firmware/ or lib/.
"""A DLMS/COSEM meter simulator built on gurux-dlms's server classes.

gurux-dlms 1.0.203's server side does not work as shipped (see
/work/shared/PEERS.md): `initialize()` crashes on the association's object
list, `handleRequest()` calls methods its own `GXServerReply` lacks, the UA
after SNRM and the AARE for HLS come out malformed, RLRE crashes, profile
selective access compares the wrong values, the GCM tag of ciphered requests
is never checked and the client's invocation counter may go backwards.
`MeterSession` subclasses `GXDLMSSecureServer` and replaces the request path:
it parses HDLC frames, TCP wrapper headers and APDUs itself, enforces the
associations and both honest-peer checks, and leaves to gurux what goes on the
wire: the COSEM objects and their A-XDR encoding (`getValue`, `setData`),
profile rows (`GXDLMSProfileGeneric.getData`), wrapper frames
(`GXDLMS.getWrapperFrame`), HDLC addresses and FCS (`getAddressBytes`,
`_GXFCS16`) and AES-GCM (`GXDLMSChippering`). Also mended: gurux's
`getHdlcFrame` writes a wrong length into frames of about 250 bytes and
more, so `hdlc_frame()` lays out the frame itself.

Associations (client SAP -> mechanism):
  16 public, no security: logical device name, serial number, clock, registers;
  17 LLS (password): everything, clock writable;
   1 HLS-GMAC, security suite 0, every APDU authenticated and encrypted with
     general-glo or service-specific glo ciphering: everything, clock writable.

Objects: clock 0-0:1.0.0.255, logical device name 0-0:42.0.0.255, serial
number 0-0:96.1.0.255, energy 1-0:1.8.0/2.8.0 (Wh, scaler 0), power
1-0:1.7.0/2.7.0 (W, scaler 0) and 1-0:16.7.0 (net, W, signed), voltages
1-0:32/52/72.7.0 (V, scaler -1), currents 1-0:31/51/71.7.0 (A, scaler -2),
frequency 1-0:14.7.0 (Hz, scaler -2), load profile 1-0:99.1.0.255 (clock,
1.8.0, 2.8.0 every 15 minutes, by range or entry), disconnect control
0-0:96.3.10.255 (read-only: its methods are refused).

Push: a Data-Notification with the date-time and a structure of
(OBIS, value, scaler-unit) triples, general-glo-ciphered, on a serial path
every few seconds, in HDLC UI frames or M-Bus long frames.
"""

import datetime
import hmac
import os
import socket
import socketserver
import struct
import threading
import time
import traceback
from zoneinfo import ZoneInfo

from cryptography.exceptions import InvalidTag
from serial import SerialException
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from gurux_dlms.AesGcmParameter import AesGcmParameter
from gurux_dlms.CountType import CountType
from gurux_dlms.GXByteBuffer import GXByteBuffer
from gurux_dlms.GXDateTime import GXDateTime
from gurux_dlms.GXDLMS import GXDLMS
from gurux_dlms.GXDLMSChippering import GXDLMSChippering
from gurux_dlms.ValueEventArgs import ValueEventArgs
from gurux_dlms._GXFCS16 import _GXFCS16
from gurux_dlms.enums import DataType, InterfaceType, Security, Unit
from gurux_dlms.internal._GXCommon import _GXCommon
from gurux_dlms.internal._GXDataInfo import _GXDataInfo
from gurux_dlms.objects import (GXDLMSAssociationLogicalName, GXDLMSClock, GXDLMSData,
                                GXDLMSDisconnectControl, GXDLMSProfileGeneric, GXDLMSRegister)
from gurux_dlms.objects.enums import ControlMode, ControlState
from gurux_dlms.secure.GXDLMSSecureServer import GXDLMSSecureServer

from host_tools.sim.faults import Faults
from host_tools.sim.household import Clock, Household

PUBLIC_CLIENT = 16
LLS_CLIENT = 17
HLS_CLIENT = 1
PUSH_CLIENT = 0x66  # HDLC destination of push frames (customer interfaces use 0x66 or 0x10)

# Keys of the DLMS UA Green Book examples: fine for a simulator, never for a meter.
DEFAULT_EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
DEFAULT_AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
DEFAULT_PASSWORD = b"12345678"
DEFAULT_SERIAL = 12345678

SERVER_LOGICAL = 1  # management logical device
SERVER_PHYSICAL = 0x10
HDLC_MAX_INFO = 1024  # the most this meter accepts; a client may negotiate less
HDLC_DEFAULT_INFO = 128  # IEC 62056-46 default when SNRM carries no parameters
MAX_PDU = 1024  # server-max-receive-pdu-size, also the most it sends in one APDU
PROFILE_CAPACITY = 4032  # 42 days of 15-minute rows; older rows fall out (FIFO)
INACTIVITY_S = 120.0

# Conformance block bits (DLMS UA 1000-2, 9.4.6.1), as a 24-bit big-endian value.
CONF_GENERAL_PROTECTION = 0x400000
CONF_PRIORITY_MGMT = 0x004000
CONF_BLOCK_GET = 0x001000
CONF_MULTIPLE_REFERENCES = 0x000200
CONF_DATA_NOTIFICATION = 0x000080
CONF_GET = 0x000010
CONF_SET = 0x000008
CONF_SELECTIVE_ACCESS = 0x000004
CONF_ACTION = 0x000001
SUPPORTED_CONFORMANCE = (CONF_GENERAL_PROTECTION | CONF_PRIORITY_MGMT | CONF_BLOCK_GET
                         | CONF_MULTIPLE_REFERENCES | CONF_GET | CONF_SET
                         | CONF_SELECTIVE_ACCESS | CONF_ACTION)

# Application context and mechanism names: 2.16.756.5.8.1.x and 2.16.756.5.8.2.x.
_CTX_PREFIX = bytes.fromhex("608574050801")
_MECH_PREFIX = bytes.fromhex("608574050802")
CTX_LN, CTX_LN_CIPHERED = 1, 3
MECH_NONE, MECH_LLS, MECH_HLS_GMAC = 0, 1, 5

# Data-access-result and action-result values (Blue Book 4.1.5).
DAR_SUCCESS = 0
DAR_HARDWARE_FAULT = 1
DAR_READ_WRITE_DENIED = 3
DAR_OBJECT_UNDEFINED = 4
DAR_CLASS_INCONSISTENT = 9
DAR_OBJECT_UNAVAILABLE = 11
DAR_TYPE_UNMATCHED = 12
DAR_NO_LONG_GET = 16
DAR_BLOCK_NUMBER_INVALID = 19
DAR_OTHER = 250

# Exception-response (state-error, service-error).
EXC_NOT_ALLOWED = 1
EXC_UNKNOWN = 2
EXC_OPERATION_NOT_POSSIBLE = 1
EXC_NOT_SUPPORTED = 2
EXC_DECIPHERING = 5
EXC_INVOCATION_COUNTER = 6

# Ciphered request tag -> response tag (general-glo answers general-glo).
_GLO_REPLY = {0xC8: 0xCC, 0xC9: 0xCD, 0xCB: 0xCF, 0xDB: 0xDB}

CLOCK_LN = "0.0.1.0.0.255"
LDN_LN = "0.0.42.0.0.255"
SERIAL_LN = "0.0.96.1.0.255"
PROFILE_LN = "1.0.99.1.0.255"
DISCONNECT_LN = "0.0.96.3.10.255"
ASSOCIATION_LN = "0.0.40.0.0.255"

# (LN, sample field or callable, data type, scaler exponent, unit)
REGISTERS = (
    ("1.0.1.8.0.255", "import_wh", DataType.UINT32, 0, Unit.ACTIVE_ENERGY),
    ("1.0.2.8.0.255", "export_wh", DataType.UINT32, 0, Unit.ACTIVE_ENERGY),
    ("1.0.1.7.0.255", "import_w", DataType.UINT32, 0, Unit.ACTIVE_POWER),
    ("1.0.2.7.0.255", "export_w", DataType.UINT32, 0, Unit.ACTIVE_POWER),
    ("1.0.16.7.0.255", "net_w", DataType.INT32, 0, Unit.ACTIVE_POWER),
    ("1.0.32.7.0.255", "v1", DataType.UINT16, -1, Unit.VOLTAGE),
    ("1.0.52.7.0.255", "v2", DataType.UINT16, -1, Unit.VOLTAGE),
    ("1.0.72.7.0.255", "v3", DataType.UINT16, -1, Unit.VOLTAGE),
    ("1.0.31.7.0.255", "i1", DataType.UINT16, -2, Unit.CURRENT),
    ("1.0.51.7.0.255", "i2", DataType.UINT16, -2, Unit.CURRENT),
    ("1.0.71.7.0.255", "i3", DataType.UINT16, -2, Unit.CURRENT),
    ("1.0.14.7.0.255", "freq", DataType.UINT16, -2, Unit.FREQUENCY),
)
# What the public client (16) may read; everything else needs LLS or HLS.
PUBLIC_READABLE = {CLOCK_LN, LDN_LN, SERIAL_LN, ASSOCIATION_LN} | {r[0] for r in REGISTERS}
# Push content (OBIS of REGISTERS), in this order after the date-time.
PUSH_REGISTERS = ("1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.1.7.0.255", "1.0.2.7.0.255",
                  "1.0.32.7.0.255", "1.0.52.7.0.255", "1.0.72.7.0.255",
                  "1.0.31.7.0.255", "1.0.51.7.0.255", "1.0.71.7.0.255")


class SecurityFailure(Exception):
    """A ciphered APDU that fails the honest-peer checks."""

    def __init__(self, service_error, detail, expected_ic=None):
        super().__init__(detail)
        self.service_error = service_error
        self.expected_ic = expected_ic


def ln_bytes(ln):
    return bytes(int(x) for x in ln.split("."))


def ln_str(b6):
    return ".".join(str(x) for x in b6)


def register_values(sample):
    """Raw register values (before scaler) for one household sample."""
    grid = sample.grid_w
    return {
        "import_wh": int(sample.import_wh) & 0xFFFFFFFF,
        "export_wh": int(sample.export_wh) & 0xFFFFFFFF,
        "import_w": int(round(max(grid, 0.0))),
        "export_w": int(round(max(-grid, 0.0))),
        "net_w": int(round(grid)),
        "v1": int(round(sample.voltage[0] * 10)),
        "v2": int(round(sample.voltage[1] * 10)),
        "v3": int(round(sample.voltage[2] * 10)),
        "i1": int(round(sample.current[0] * 100)),
        "i2": int(round(sample.current[1] * 100)),
        "i3": int(round(sample.current[2] * 100)),
        "freq": int(round(sample.frequency * 100)),
    }


class Meter:
    """What the meter is and knows, shared by all its sessions and its push.

    `clock` drives time (default: real time from now); `household` makes the
    readings. The keys and counters live here because they belong to the
    meter, not to a connection: the client invocation counters it has seen
    survive a reconnect, as in a real meter.
    """

    def __init__(self, household=None, clock=None, seed=1, serial_number=DEFAULT_SERIAL,
                 system_title=None, ek=DEFAULT_EK, ak=DEFAULT_AK, password=DEFAULT_PASSWORD,
                 logical_address=SERVER_LOGICAL, physical_address=SERVER_PHYSICAL,
                 max_pdu=MAX_PDU, hdlc_max_info=HDLC_MAX_INFO, tz="Europe/Paris",
                 server_ic=1, faults=None):
        self.clock = clock or Clock()
        self.household = household or Household(
            seed=seed, start=self.clock.now() - datetime.timedelta(days=11))
        self.serial_number = serial_number
        self.system_title = system_title or (b"PGW" + serial_number.to_bytes(5, "big"))
        if len(self.system_title) != 8:
            raise ValueError("system title must be 8 bytes")
        self.ek, self.ak, self.password = bytes(ek), bytes(ak), bytes(password)
        if len(self.ek) != 16 or len(self.ak) != 16:
            raise ValueError("keys must be 16 bytes (security suite 0)")
        self.logical_address, self.physical_address = logical_address, physical_address
        self.max_pdu = max_pdu
        self.hdlc_max_info = hdlc_max_info
        self.tz = ZoneInfo(tz)
        self.clock_offset = 0.0  # set by a client writing the clock
        self.faults = faults or Faults()
        self.lock = threading.RLock()
        self._server_ic = server_ic
        self._rows = []
        self._client_ic = {}  # client system title -> last accepted invocation counter
        self.stats = {"frames_in": 0, "frames_out": 0, "bad_frames": 0, "apdus": 0,
                      "associations": 0, "rejected_associations": 0, "bad_tag": 0,
                      "replayed_ic": 0, "pushes": 0, "blocks": 0}

    # ---- time and readings ----

    def now(self):
        return self.clock.timestamp()

    def local_time(self, t):
        return datetime.datetime.fromtimestamp(t, self.tz)

    def sample(self, t=None):
        return self.household.sample(self.now() if t is None else t)

    def values(self, t=None):
        return register_values(self.sample(t))

    def profile_rows(self, t_from=None, t_to=None):
        """[(t, import_wh, export_wh)] of the 15-minute load profile, oldest first.

        Rows are captured once and kept (the past never changes), at most
        PROFILE_CAPACITY of them, as in a meter's FIFO buffer.
        """
        now = self.now()
        with self.lock:
            rows = self._rows
            nxt = rows[-1][0] + 900 if rows else None
            if nxt is None:
                start = max(self.household.t_start, now - 900 * PROFILE_CAPACITY)
                nxt = int(-(-start // 900) * 900)
            while nxt <= now:
                imp, exp = self.household.energy(nxt)
                rows.append((nxt, int(imp) & 0xFFFFFFFF, int(exp) & 0xFFFFFFFF))
                nxt += 900
            del rows[:-PROFILE_CAPACITY]
            t_to = now if t_to is None else min(t_to, now)
            return [r for r in rows if (t_from is None or r[0] >= t_from) and r[0] <= t_to]

    # ---- security state ----

    def next_server_ic(self):
        with self.lock:
            ic = self._server_ic
            self._server_ic = (ic + 1) & 0xFFFFFFFF
            return ic

    def accept_client_ic(self, title, ic):
        """True (and remembered) if `ic` is above every counter seen from `title`."""
        with self.lock:
            last = self._client_ic.get(bytes(title), -1)
            if ic <= last:
                return False
            self._client_ic[bytes(title)] = ic
            return True

    def expected_client_ic(self, title):
        with self.lock:
            return self._client_ic.get(bytes(title), -1) + 1

    def count(self, key, n=1):
        with self.lock:
            self.stats[key] = self.stats.get(key, 0) + n

    # ---- push ----

    def push_apdu(self, t=None, invoke_id=None):
        """One general-glo-ciphered Data-Notification (the APDU, unframed)."""
        t = self.now() if t is None else t
        settings = _settings()
        body = GXByteBuffer()
        body.setUInt8(DataType.STRUCTURE)
        _GXCommon.setObjectCount(1 + 3 * len(PUSH_REGISTERS), body)
        _GXCommon.setData(settings, body, DataType.OCTET_STRING, GXDateTime(self.local_time(t)))
        vals = register_values(self.sample(t))
        by_ln = {r[0]: r for r in REGISTERS}
        for ln in PUSH_REGISTERS:
            _ln, field, dtype, scaler, unit = by_ln[ln]
            _GXCommon.setData(settings, body, DataType.OCTET_STRING, ln_bytes(ln))
            _GXCommon.setData(settings, body, dtype, vals[field])
            body.setUInt8(DataType.STRUCTURE)
            body.setUInt8(2)
            _GXCommon.setData(settings, body, DataType.INT8, scaler)
            _GXCommon.setData(settings, body, DataType.ENUM, int(unit))
        apdu = GXByteBuffer()
        apdu.setUInt8(0x0F)  # data-notification
        ic = self.next_server_ic()
        # long-invoke-id-and-priority: invoke id in the low 24 bits, flags (unconfirmed, normal) clear
        apdu.setUInt32((ic if invoke_id is None else invoke_id) & 0x00FFFFFF)
        stamp = GXByteBuffer()
        _GXCommon.setData(settings, stamp, DataType.OCTET_STRING, GXDateTime(self.local_time(t)))
        apdu.set(bytes(stamp.array())[1:])  # date-time: OPTIONAL octet-string, no type tag
        apdu.set(body)
        self.count("pushes")
        return self.cipher(bytes(apdu.array()), 0xDB, ic=ic)

    def cipher(self, plain, tag, ic=None, security=Security.AUTHENTICATION_ENCRYPTION):
        """Protect an APDU with gurux's AES-GCM: general-glo (0xDB) or a glo tag."""
        p = AesGcmParameter(tag, self.system_title, self.ek, self.ak)
        p.security = security
        p.invocationCounter = self.next_server_ic() if ic is None else ic
        return bytes(GXDLMSChippering.encryptAesGcm(p, plain))

    def gmac(self, title, ic, challenge):
        """f(challenge) of HLS-GMAC: SC || IC || GMAC(SC || AK || challenge)."""
        p = AesGcmParameter(0x10, title, self.ek, self.ak)
        p.security = Security.AUTHENTICATION
        p.invocationCounter = ic
        p.type_ = CountType.TAG
        tag = bytes(GXDLMSChippering.encryptAesGcm(p, challenge))
        return bytes([0x10]) + ic.to_bytes(4, "big") + tag


def _settings():
    from gurux_dlms.GXDLMSSettings import GXDLMSSettings

    return GXDLMSSettings(True, None)


def gcm_open(key, ak, title, sc, ic, body):
    """Check and open a ciphered body (ciphertext || 12-byte tag). Raises InvalidTag."""
    iv = bytes(title) + ic.to_bytes(4, "big")
    if len(body) < 12:
        raise InvalidTag()
    text, tag = bytes(body[:-12]), bytes(body[-12:])
    dec = Cipher(algorithms.AES(key), modes.GCM(iv, tag, min_tag_length=12)).decryptor()
    if sc & 0x20:
        dec.authenticate_additional_data(bytes([sc]) + ak)
        plain = dec.update(text)
    else:  # authentication only: the text is in clear and authenticated
        dec.authenticate_additional_data(bytes([sc]) + ak + text)
        plain = text
    dec.finalize()
    return plain


# ---- small BER / A-XDR readers for the request side ----

class _Reader:
    def __init__(self, data, pos=0):
        self.data = bytes(data)
        self.pos = pos

    def u8(self):
        if self.pos >= len(self.data):
            raise ValueError("truncated")
        v = self.data[self.pos]
        self.pos += 1
        return v

    def take(self, n):
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("truncated")
        v = self.data[self.pos:self.pos + n]
        self.pos += n
        return v

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def length(self):
        """A-XDR / BER length: short form, or 0x81/0x82/0x83/0x84 then the length."""
        b = self.u8()
        if b < 0x80:
            return b
        n = b & 0x7F
        if not 1 <= n <= 4:
            raise ValueError("bad length")
        return int.from_bytes(self.take(n), "big")

    def rest(self):
        return self.take(len(self.data) - self.pos)

    def more(self):
        return self.pos < len(self.data)


def _ber_items(data):
    r = _Reader(data)
    while r.more():
        tag = r.u8()
        yield tag, r.take(r.length())


def _axdr_length(n):
    b = GXByteBuffer()
    _GXCommon.setObjectCount(n, b)
    return bytes(b.array())


def _decode_data(raw):
    """A-XDR Data -> Python value with gurux's decoder; returns (value, bytes used)."""
    buf = GXByteBuffer(bytes(raw))
    info = _GXDataInfo()
    value = _GXCommon.getData(_settings(), buf, info)
    if not info.complete:
        raise ValueError("truncated data")
    return value, buf.position


def _skip_data(r):
    """Skip one A-XDR Data in reader r, returning its bytes (gurux decodes it)."""
    _value, used = _decode_data(r.data[r.pos:])
    return r.take(used)


def parse_datetime(b12, tz):
    """12-byte COSEM date-time -> POSIX seconds (deviation = minutes UTC minus local)."""
    b12 = bytes(b12)
    if len(b12) != 12:
        raise ValueError("date-time is 12 bytes")
    year, month, day, _dow, hour, minute, second, hundredths = struct.unpack(">HBBBBBBB", b12[:9])
    dev = struct.unpack(">h", b12[9:11])[0]
    if year == 0xFFFF or month > 12 or day > 31:
        raise ValueError("unspecified date")
    second = 0 if second == 0xFF else second
    minute = 0 if minute == 0xFF else minute
    hour = 0 if hour == 0xFF else hour
    frac = 0 if hundredths == 0xFF else hundredths / 100.0
    naive = datetime.datetime(year, month, day, hour, minute, second)
    if dev == -0x8000:  # not specified: the meter's local time
        return naive.replace(tzinfo=tz).timestamp() + frac
    return naive.replace(tzinfo=datetime.timezone.utc).timestamp() + dev * 60 + frac


class MeterSession(GXDLMSSecureServer):
    """One client connection to the meter: HDLC or TCP-wrapper framing, one association.

    `receive(bytes)` takes whatever arrived and returns the list of byte
    strings to send back (frames, or wrapper PDUs).
    """

    def __init__(self, meter, interface=InterfaceType.HDLC):
        super().__init__(True, interface)
        self.meter = meter
        self.interface = interface
        # gurux keeps ciphering under `settings.ciphering` but reads `settings.cipher`.
        self.settings.cipher = None
        self._build_objects()
        self.initialize()
        self._rx = bytearray()
        self._reset_link()
        self._reset_association()
        self.last_activity = time.monotonic()

    # ---- gurux object model ----

    def _build_objects(self):
        m = self.meter
        self.objects = {}
        clock = GXDLMSClock(CLOCK_LN)
        clock.timeZone = -60  # CET: minutes of local time to UTC, as the Blue Book counts
        clock.enabled = True
        clock.deviation = 60
        self._add(clock)
        ldn = GXDLMSData(LDN_LN)
        ldn.value = b"PGW" + ("SIM%010d" % m.serial_number).encode()
        ldn.setDataType(2, DataType.OCTET_STRING)
        self._add(ldn)
        sn = GXDLMSData(SERIAL_LN)
        sn.value = ("%08d" % m.serial_number).encode()
        sn.setDataType(2, DataType.OCTET_STRING)
        self._add(sn)
        self.registers = {}
        for ln, field, dtype, scaler, unit in REGISTERS:
            reg = GXDLMSRegister(ln)
            reg.scaler = 10.0 ** scaler  # gurux holds the scaler as a factor
            reg.unit = unit
            reg.setDataType(2, dtype)
            reg.value = 0
            self._add(reg)
            self.registers[ln] = (reg, field)
        pg = GXDLMSProfileGeneric(PROFILE_LN)
        pg.addCaptureObject(clock, 2, 0)
        pg.addCaptureObject(self.objects[(3, "1.0.1.8.0.255")], 2, 0)
        pg.addCaptureObject(self.objects[(3, "1.0.2.8.0.255")], 2, 0)
        pg.capturePeriod = 900
        pg.profileEntries = PROFILE_CAPACITY
        self._add(pg)
        self.profile = pg
        dc = GXDLMSDisconnectControl(DISCONNECT_LN)
        dc.outputState = True
        dc.controlState = ControlState.CONNECTED
        dc.controlMode = ControlMode.NONE
        self._add(dc)
        self.association = GXDLMSAssociationLogicalName(ASSOCIATION_LN)
        self._add(self.association)

    def _add(self, obj):
        self.items.append(obj)
        self.objects[(int(obj.objectType), obj.logicalName)] = obj

    def initialize(self):
        # Mended: gurux appends the whole collection to the association's
        # object list as one item, which its own collection refuses.
        self.initialized = True
        for obj in self.items:
            obj.start = self
        for obj in self.items:
            self.association.objectList.append(obj)

    # The GXDLMSServer callbacks: this session decides access itself.
    def isTarget(self, serverAddress, clientAddress):
        return True

    def onValidateAuthentication(self, authentication, password):
        return 0

    def onPreGet(self, args):
        pass

    def onPostGet(self, args):
        pass

    def onFindObject(self, objectType, sn, ln):
        return self.objects.get((int(objectType), ln))

    def onPreRead(self, args):
        pass

    def onPostRead(self, args):
        pass

    def onPreWrite(self, args):
        pass

    def onPostWrite(self, args):
        pass

    def onConnected(self, connectionInfo):
        pass

    def onInvalidConnection(self, connectionInfo):
        pass

    def onDisconnected(self, connectionInfo):
        pass

    def onGetAttributeAccess(self, arg):
        return 1

    def onGetMethodAccess(self, arg):
        return 0

    def onPreAction(self, args):
        pass

    def onPostAction(self, args):
        pass

    def handleRequest(self, sr):
        """Mended entry point: gurux's own cannot answer a request (see the module doc)."""
        out = self.receive(bytes(sr.data or b""))
        sr.reply = b"".join(out)
        return sr.reply

    # ---- link state ----

    def _reset_link(self):
        self.connected = False  # HDLC NRM, or a TCP connection
        self.vs = 0
        self.vr = 0
        self.client_address = None
        self.max_info_tx = HDLC_DEFAULT_INFO
        self.max_info_rx = HDLC_DEFAULT_INFO
        self._rx_segments = bytearray()
        self._tx_pending = None  # GXByteBuffer with the rest of a segmented answer
        self._last_frame = None
        self.settings.hdlc.maxInfoTX = HDLC_DEFAULT_INFO
        self.settings.hdlc.maxInfoRX = HDLC_DEFAULT_INFO

    def _reset_association(self):
        self.associated = False
        self.hls_pending = False
        self.client = None
        self.mechanism = None
        self.ciphered = False
        self.client_title = None
        self.ctos = None
        self.stoc = None
        self.client_max_pdu = MAX_PDU
        self.conformance = 0
        self._long_get = None

    def receive(self, data):
        """Feed received bytes; return the list of byte strings to send."""
        self.last_activity = time.monotonic()
        self._rx += data
        if len(self._rx) > 64 * 1024:  # bounded: garbage without frames is dropped
            del self._rx[:-4096]
        if self.interface == InterfaceType.WRAPPER:
            return self._receive_wrapper()
        return self._receive_hdlc()

    def idle(self, now=None):
        """Drop the link after INACTIVITY_S without traffic, as meters do."""
        now = time.monotonic() if now is None else now
        if self.connected and now - self.last_activity > INACTIVITY_S:
            self._reset_link()
            self._reset_association()

    # ---- TCP wrapper (IEC 62056-47) ----

    def _receive_wrapper(self):
        out = []
        while len(self._rx) >= 8:
            version, src, dst, length = struct.unpack(">HHHH", self._rx[:8])
            if version != 1:
                raise ConnectionError("not a DLMS wrapper header (version %d)" % version)
            if len(self._rx) < 8 + length:
                break
            apdu = bytes(self._rx[8:8 + length])
            del self._rx[:8 + length]
            self.meter.count("frames_in")
            if dst != self.meter.logical_address:
                continue  # not for this logical device
            if self.client is not None and src != self.client and apdu[:1] != b"\x60":
                continue
            self.settings.clientAddress = src
            self.settings.serverAddress = dst
            reply = self._handle_apdu(apdu, src)
            if reply is not None:
                buf = GXByteBuffer(reply)
                out.append(bytes(GXDLMS.getWrapperFrame(self.settings, 0, buf)))
        return self._apply_faults(out)

    # ---- HDLC (IEC 62056-46, frame format type 3) ----

    def _receive_hdlc(self):
        out = []
        while True:
            frame = self._next_frame()
            if frame is None:
                break
            try:
                out.extend(self._handle_frame(frame))
            except (IndexError, ValueError, struct.error):  # a frame too short for its addresses
                self.meter.count("bad_frames")
        return self._apply_faults(out)

    def _next_frame(self):
        """Cut the next complete frame (without flags) out of the receive buffer."""
        rx = self._rx
        while True:
            start = rx.find(b"\x7e")
            if start < 0:
                self._mode_e(rx)
                rx.clear()
                return None
            if start:
                self._mode_e(rx[:start])
                del rx[:start]
            if len(rx) < 3:
                return None
            if rx[1] == 0x7E:  # back-to-back flags
                del rx[0]
                continue
            if rx[1] & 0xF0 != 0xA0:
                del rx[0]
                self.meter.count("bad_frames")
                continue
            length = ((rx[1] & 0x07) << 8) | rx[2]
            if length < 7 or length > self.meter.hdlc_max_info + 32:
                del rx[0]
                self.meter.count("bad_frames")
                continue
            if len(rx) < length + 2:
                return None
            if rx[length + 1] != 0x7E:
                del rx[0]
                self.meter.count("bad_frames")
                continue
            frame = bytes(rx[1:length + 1])
            del rx[:length + 1]  # keep the closing flag: it may open the next frame
            return frame

    def _mode_e(self, text):
        """IEC 62056-21 mode E sign-on (/?!) before HDLC: answer the identification
        ("5" = 9600 baud, "\\2" = mode E: HDLC follows). The acknowledgement the
        client sends back (ACK 2 5 2) is ignored: on a pty there is no baud rate to change."""
        self._text = (getattr(self, "_text", b"") + bytes(text))[-64:]
        start = self._text.find(b"/?")
        if start >= 0 and self._text.find(b"!\r\n", start) > 0:
            self._text = b""
            ident = b"/PGW5\\2" + ("SIM%08d" % self.meter.serial_number).encode() + b"\r\n"
            self._pending_raw = getattr(self, "_pending_raw", []) + [ident]

    def _handle_frame(self, frame):
        m = self.meter
        # Addresses end at the first byte with bit 0 set.
        pos = 2
        dest = []
        while pos < len(frame) and len(dest) < 4:
            dest.append(frame[pos])
            pos += 1
            if dest[-1] & 1:
                break
        if not dest or not dest[-1] & 1 or len(dest) == 3:
            m.count("bad_frames")
            return []
        if pos >= len(frame) or not frame[pos] & 1:
            m.count("bad_frames")
            return []
        client = frame[pos] >> 1
        pos += 1
        control = frame[pos]
        pos += 1
        if len(frame) > pos + 2:  # has an information field
            hcs = (frame[pos] << 8) | frame[pos + 1]
            if _GXFCS16.countFCS16(frame, 0, pos) != hcs:
                m.count("bad_frames")
                return []
            info = frame[pos + 2:-2]
        else:
            info = b""
        fcs = (frame[-2] << 8) | frame[-1]
        if _GXFCS16.countFCS16(frame, 0, len(frame) - 2) != fcs:
            m.count("bad_frames")
            return []
        upper, lower = _split_server_address(dest)
        if upper != m.logical_address or (lower is not None and lower not in (m.physical_address, 0x7F, 0x3FFF)):
            return []  # another meter on the bus
        m.count("frames_in")
        self.settings.clientAddress = client
        size = len(dest)
        self.settings.serverAddressSize = size
        if size == 1:
            self.settings.serverAddress = upper
        elif size == 2:
            self.settings.serverAddress = (upper << 7) | (lower or 0)
        else:
            self.settings.serverAddress = (upper << 14) | (lower or 0)
        segmented = bool(frame[0] & 0x08)
        pf = control & 0x10
        kind = control & ~0x10
        if kind == 0x83:  # SNRM
            return [self._snrm(info, client)]
        if kind == 0x43:  # DISC
            was = self.connected
            self._reset_link()
            self._reset_association()
            return [self._frame(0x73 if was else 0x1F)]
        if not self.connected:
            return [self._frame(0x1F)] if pf else []  # DM: not in NRM
        if client != self.client_address:
            return []
        if control & 0x01 == 0:  # I frame
            ns = (control >> 1) & 7
            if ns != self.vr:
                if ns == (self.vr - 1) & 7 and self._last_frame is not None:
                    return [self._last_frame]  # our answer was lost: send it again
                return [self._frame(0x01 | (self.vr << 5) | 0x10)]  # RR: expected N(S)
            self.vr = (self.vr + 1) & 7
            self._rx_segments += info
            if len(self._rx_segments) > 64 * 1024:
                self._rx_segments = bytearray()
                return [self._frame(0x97)]  # FRMR: more than this meter takes
            if segmented:
                return [self._frame(0x01 | (self.vr << 5) | 0x10)]
            data = bytes(self._rx_segments)
            self._rx_segments = bytearray()
            if data[:3] != b"\xe6\xe6\x00":
                return [self._frame(0x01 | (self.vr << 5) | 0x10)]
            reply = self._handle_apdu(data[3:], client)
            if reply is None:
                return [self._frame(0x01 | (self.vr << 5) | 0x10)]
            self._tx_pending = b"\xe6\xe7\x00" + reply
            return [self._send_segment()]
        if control & 0x0F in (0x01, 0x05):  # RR / RNR
            nr = (control >> 5) & 7
            if self._tx_pending is not None and nr == self.vs:
                return [self._send_segment()]
            if nr == (self.vs - 1) & 7 and self._last_frame is not None:
                return [self._last_frame]
            return [self._frame(0x01 | (self.vr << 5) | 0x10)]
        if kind == 0x03:  # UI: nothing to answer
            return []
        return [self._frame(0x97)]  # FRMR: control field not implemented

    def _send_segment(self):
        control = (self.vr << 5) | 0x10 | (self.vs << 1)
        self.vs = (self.vs + 1) & 7
        chunk = self._tx_pending[:self.max_info_tx]
        self._tx_pending = self._tx_pending[len(chunk):] or None
        frame = self._frame(control, chunk, segmented=self._tx_pending is not None)
        self._last_frame = frame
        return frame

    def _frame(self, control, info=b"", segmented=False):
        s = self.settings
        dest = bytes(GXDLMS.getAddressBytes(s.clientAddress, 1))
        src = bytes(GXDLMS.getAddressBytes(s.serverAddress, s.serverAddressSize))
        return hdlc_frame(dest, src, control, info, segmented)

    def _snrm(self, info, client):
        """Mended SNRM -> UA with the negotiated parameters (gurux writes a broken UA)."""
        m = self.meter
        tx, rx = HDLC_DEFAULT_INFO, HDLC_DEFAULT_INFO
        try:
            r = _Reader(info)
            if r.more():
                if r.take(2) != b"\x81\x80":
                    raise ValueError("not a parameter negotiation field")
                r = _Reader(r.take(r.u8()))
                while r.more():
                    pid = r.u8()
                    value = int.from_bytes(r.take(r.u8()), "big")
                    if pid == 0x05:  # the client's maximum transmit: what we receive
                        rx = value
                    elif pid == 0x06:  # the client's maximum receive: what we send
                        tx = value
        except ValueError:
            m.count("bad_frames")
            return self._frame(0x97)
        self._reset_link()
        self._reset_association()
        self.connected = True
        self.client_address = client
        self.max_info_tx = max(32, min(tx, m.hdlc_max_info))
        self.max_info_rx = max(32, min(rx, m.hdlc_max_info))
        self.settings.hdlc.maxInfoTX = self.max_info_tx
        self.settings.hdlc.maxInfoRX = self.max_info_rx
        params = GXByteBuffer()
        params.setUInt8(0x05)
        GXDLMS.appendHdlcParameter(params, self.max_info_tx)
        params.setUInt8(0x06)
        GXDLMS.appendHdlcParameter(params, self.max_info_rx)
        params.setUInt8(0x07)
        params.setUInt8(4)
        params.setUInt32(1)  # window size transmit: this meter sends one frame at a time
        params.setUInt8(0x08)
        params.setUInt8(4)
        params.setUInt32(1)
        ua = GXByteBuffer()
        ua.setUInt8(0x81)
        ua.setUInt8(0x80)
        ua.setUInt8(len(params))
        ua.set(params)
        return self._frame(0x73, bytes(ua.array()))

    def _apply_faults(self, out):
        pending = getattr(self, "_pending_raw", None)
        if pending:
            out = pending + out
            self._pending_raw = []
        result = []
        for chunk in out:
            chunk = self.meter.faults.apply(chunk)
            if chunk is not None:
                self.meter.count("frames_out")
                result.append(chunk)
        return result

    # ---- APDU layer ----

    def _handle_apdu(self, apdu, client):
        m = self.meter
        m.count("apdus")
        if not apdu:
            return None
        tag = apdu[0]
        try:
            if tag == 0x60:
                return self._aarq(apdu, client)
            if tag == 0x62:
                return self._rlrq(apdu)
            if tag in _GLO_REPLY:
                if not self.associated and not self.hls_pending:
                    return _exception(EXC_NOT_ALLOWED, EXC_OPERATION_NOT_POSSIBLE)
                plain = self._unprotect(apdu)
                reply = self._xdlms(plain, ciphered=True)
                if reply is None:
                    return None
                return m.cipher(reply, _GLO_REPLY[tag])
            if tag in (0xC0, 0xC1, 0xC3):
                if not self.associated and not self.hls_pending:
                    return _exception(EXC_NOT_ALLOWED, EXC_OPERATION_NOT_POSSIBLE)
                if self.ciphered:  # the HLS association's policy: everything ciphered
                    return _exception(EXC_NOT_ALLOWED, EXC_OPERATION_NOT_POSSIBLE)
                return self._xdlms(apdu, ciphered=False)
            return _exception(EXC_UNKNOWN, EXC_NOT_SUPPORTED)
        except SecurityFailure as e:
            m.count("bad_tag" if e.service_error == EXC_DECIPHERING else "replayed_ic")
            if e.expected_ic is not None:
                return _exception(EXC_NOT_ALLOWED, e.service_error) + e.expected_ic.to_bytes(4, "big")
            return _exception(EXC_NOT_ALLOWED, e.service_error)
        except (ValueError, KeyError, IndexError, struct.error, TypeError):
            return _exception(EXC_NOT_ALLOWED, EXC_OPERATION_NOT_POSSIBLE)

    def _unprotect(self, apdu):
        """Open a ciphered request: GCM tag first, then the invocation counter."""
        r = _Reader(apdu, 1)
        if apdu[0] == 0xDB:
            title = r.take(r.length())
            if len(title) != 8:
                raise SecurityFailure(EXC_DECIPHERING, "system title must be 8 bytes")
        else:
            title = self.client_title
        content = r.take(r.length())
        if self.client_title is None or title != self.client_title:
            raise SecurityFailure(EXC_DECIPHERING, "not the associated client's system title")
        return self._open(content, title)

    def _open(self, content, title):
        """SC || IC || ciphertext || tag -> plaintext, with both honest-peer checks."""
        m = self.meter
        if len(content) < 5 + 12:
            raise SecurityFailure(EXC_DECIPHERING, "too short")
        sc = content[0]
        ic = int.from_bytes(content[1:5], "big")
        if sc & 0x0F != 0 or sc & 0x80 or not sc & 0x10:
            raise SecurityFailure(EXC_DECIPHERING, "security suite 0 with authentication required")
        try:
            plain = gcm_open(m.ek, m.ak, title, sc, ic, content[5:])
        except InvalidTag:
            raise SecurityFailure(EXC_DECIPHERING, "GCM tag does not verify") from None
        if not m.accept_client_ic(title, ic):
            raise SecurityFailure(EXC_INVOCATION_COUNTER, "invocation counter not increasing",
                                  m.expected_client_ic(title))
        return plain

    # ---- ACSE ----

    def _aarq(self, apdu, client):
        m = self.meter
        self._reset_association()
        r = _Reader(apdu, 1)
        body = r.take(r.length())
        ctx = mech = None
        title = auth_value = user_info = None
        for tag, value in _ber_items(body):
            if tag == 0xA1 and value[:2] == b"\x06\x07" and value[2:8] == _CTX_PREFIX:
                ctx = value[8]
            elif tag == 0xA6 and value[:1] == b"\x04":
                title = value[2:2 + value[1]]
            elif tag == 0x8B and value[:6] == _MECH_PREFIX:
                mech = value[6]
            elif tag == 0xAC and value[:1] == b"\x80":
                auth_value = value[2:2 + value[1]]
            elif tag == 0xBE and value[:1] == b"\x04":
                vr = _Reader(value, 1)
                user_info = vr.take(vr.length())
        want = {PUBLIC_CLIENT: (MECH_NONE, CTX_LN), LLS_CLIENT: (MECH_LLS, CTX_LN),
                HLS_CLIENT: (MECH_HLS_GMAC, CTX_LN_CIPHERED)}.get(client)
        mech = MECH_NONE if mech is None else mech
        if want is None:
            return self._aare_reject(ctx, 1, 1)  # rejected-permanent, no-reason-given
        if ctx != want[1]:
            return self._aare_reject(ctx, 1, 2)  # application-context-name-not-supported
        if mech != want[0]:
            return self._aare_reject(ctx, 1, 11 if mech else 12)
        if user_info is None:
            return self._aare_reject(ctx, 1, 1)
        if mech == MECH_LLS and not hmac.compare_digest(bytes(auth_value or b""), m.password):
            return self._aare_reject(ctx, 1, 13)  # authentication-failure
        if mech == MECH_HLS_GMAC:
            if title is None or len(title) != 8 or not auth_value or not 8 <= len(auth_value) <= 64:
                return self._aare_reject(ctx, 1, 13)
            if user_info[:1] != b"\x21":  # glo-initiate-request
                return self._aare_reject(ctx, 1, 1)
            try:
                ur = _Reader(user_info, 1)
                user_info = self._open(ur.take(ur.length()), title)
            except (SecurityFailure, ValueError) as e:
                if isinstance(e, SecurityFailure):
                    m.count("bad_tag" if e.service_error == EXC_DECIPHERING else "replayed_ic")
                return self._aare_reject(ctx, 1, 1)
            self.client_title = bytes(title)
            self.ctos = bytes(auth_value)
            self.ciphered = True
        try:
            proposed, client_max = _parse_initiate_request(user_info)
        except ValueError:
            return self._aare_reject(ctx, 1, 1)
        if proposed is None:  # DLMS version below 6
            return self._aare_reject(ctx, 1, 1, bytes.fromhex("0e010601"))
        conformance = proposed & SUPPORTED_CONFORMANCE
        if not conformance & (CONF_GET | CONF_SET | CONF_ACTION):
            return self._aare_reject(ctx, 1, 1, bytes.fromhex("0e010602"))
        if client_max < 12:
            return self._aare_reject(ctx, 1, 1, bytes.fromhex("0e010603"))
        self.client = client
        self.mechanism = mech
        self.conformance = conformance
        self.client_max_pdu = client_max if client_max else 0xFFFF
        initiate = _initiate_response(conformance, m.max_pdu)
        if self.ciphered:
            initiate = m.cipher(initiate, 0x28)  # glo-initiate-response
        if mech == MECH_HLS_GMAC:
            self.stoc = os.urandom(16)
            self.hls_pending = True
            aare = _aare(ctx, 0, 14, initiate, m.system_title, mech, self.stoc)
        else:
            self.associated = True
            aare = _aare(ctx, 0, 0, initiate, None, None, None)
        m.count("associations")
        return aare

    def _aare_reject(self, ctx, result, diagnostic, user_info=None):
        self.meter.count("rejected_associations")
        self._reset_association()
        return _aare(ctx or CTX_LN, result, diagnostic, user_info, None, None, None)

    def _rlrq(self, apdu):
        """Mended RLRQ -> RLRE: reason normal, user-information answered in kind."""
        m = self.meter
        r = _Reader(apdu, 1)
        body = r.take(r.length())
        user_info = None
        for tag, value in _ber_items(body):
            if tag == 0xBE and value[:1] == b"\x04":
                vr = _Reader(value, 1)
                user_info = vr.take(vr.length())
        info = None
        if user_info and self.ciphered:
            if user_info[:1] != b"\x21":
                return _exception(EXC_NOT_ALLOWED, EXC_OPERATION_NOT_POSSIBLE)
            ur = _Reader(user_info, 1)
            self._open(ur.take(ur.length()), self.client_title)  # raises SecurityFailure
            info = m.cipher(_initiate_response(self.conformance, m.max_pdu), 0x28)
        elif user_info:
            info = _initiate_response(self.conformance, m.max_pdu)
        self._reset_association()
        out = bytearray(b"\x80\x01\x00")  # reason: normal
        if info is not None:
            inner = b"\x04" + _axdr_length(len(info)) + info
            out += b"\xbe" + _axdr_length(len(inner)) + inner
        return bytes(b"\x63" + _axdr_length(len(out)) + out)

    # ---- xDLMS services ----

    def _xdlms(self, apdu, ciphered):
        tag = apdu[0]
        if self.hls_pending and tag != 0xC3:
            return _exception(EXC_NOT_ALLOWED, EXC_OPERATION_NOT_POSSIBLE)
        if tag == 0xC0:
            return self._get(apdu, ciphered)
        if tag == 0xC1:
            return self._set(apdu)
        if tag == 0xC3:
            return self._action(apdu, ciphered)
        return _exception(EXC_UNKNOWN, EXC_NOT_SUPPORTED)

    def _limit(self, ciphered):
        """Largest APDU this meter sends: the smaller of both sides' PDU sizes."""
        limit = min(self.client_max_pdu, self.meter.max_pdu)
        return limit - (32 if ciphered else 0)

    def _get(self, apdu, ciphered):
        r = _Reader(apdu, 1)
        kind = r.u8()
        invoke = r.u8()
        if kind == 1:
            payload = self._read_attribute(r)  # 00 Data | 01 DAR
            whole = bytes([0xC4, 1, invoke]) + payload
            if len(whole) <= self._limit(ciphered) or payload[0] != 0:
                return whole
            return self._start_blocks(invoke, payload[1:], ciphered)
        if kind == 2:
            block = r.u32()
            lg = self._long_get
            if lg is None:
                return bytes([0xC4, 2, invoke, 1]) + struct.pack(">I", block) + bytes([1, DAR_NO_LONG_GET])
            if block != lg["block"]:
                self._long_get = None
                return bytes([0xC4, 2, invoke, 1]) + struct.pack(">I", block) + bytes([1, DAR_BLOCK_NUMBER_INVALID])
            return self._next_block(invoke)
        if kind == 3:
            if not self.conformance & CONF_MULTIPLE_REFERENCES:
                return _exception(EXC_NOT_ALLOWED, EXC_NOT_SUPPORTED)
            n = r.length()
            results = [self._read_attribute(r) for _ in range(n)]
            payload = _axdr_length(n) + b"".join(results)
            whole = bytes([0xC4, 3, invoke]) + payload
            if len(whole) <= self._limit(ciphered):
                return whole
            return self._start_blocks(invoke, payload, ciphered)
        return _exception(EXC_UNKNOWN, EXC_NOT_SUPPORTED)

    def _start_blocks(self, invoke, raw, ciphered):
        if not self.conformance & CONF_BLOCK_GET:
            return bytes([0xC4, 1, invoke, 1, DAR_OTHER])
        size = self._limit(ciphered) - 16
        self._long_get = {"raw": raw, "pos": 0, "block": 0, "size": max(16, size)}
        return self._next_block(invoke)

    def _next_block(self, invoke):
        lg = self._long_get
        chunk = lg["raw"][lg["pos"]:lg["pos"] + lg["size"]]
        lg["pos"] += len(chunk)
        lg["block"] += 1
        last = lg["pos"] >= len(lg["raw"])
        self.meter.count("blocks")
        out = bytes([0xC4, 2, invoke, 1 if last else 0]) + struct.pack(">I", lg["block"])
        out += b"\x00" + _axdr_length(len(chunk)) + chunk  # raw-data
        if last:
            self._long_get = None
        return out

    def _find(self, class_id, ln6):
        return self.objects.get((class_id, ln_str(ln6)))

    def _may_read(self, obj):
        if self.client == PUBLIC_CLIENT:
            return obj.logicalName in PUBLIC_READABLE
        return True

    def _read_attribute(self, r):
        """Attribute descriptor (+ access selection) -> 00 Data or 01 DAR."""
        class_id = r.u16()
        ln6 = r.take(6)
        attr = struct.unpack(">b", r.take(1))[0]
        selector, params = 0, None
        if r.u8():
            selector = r.u8()
            params, _used = _decode_data(r.data[r.pos:])
            _skip_data(r)
        obj = self.objects.get((class_id, ln_str(ln6)))
        if obj is None:
            known = [k for k in self.objects if k[1] == ln_str(ln6)]
            return bytes([1, DAR_CLASS_INCONSISTENT if known else DAR_OBJECT_UNDEFINED])
        if not 1 <= attr <= obj.getAttributeCount():
            return bytes([1, DAR_OBJECT_UNDEFINED])
        if not self._may_read(obj):
            return bytes([1, DAR_READ_WRITE_DENIED])
        try:
            return b"\x00" + self._encode(obj, attr, selector, params)
        except (ValueError, TypeError, IndexError) as e:
            return bytes([1, DAR_OTHER if "selector" not in str(e) else DAR_OBJECT_UNAVAILABLE])

    def _refresh(self, t):
        values = self.meter.values(t)
        for reg, field in self.registers.values():
            reg.value = values[field]
        clock = self.objects[(8, CLOCK_LN)]
        local = self.meter.local_time(t + self.meter.clock_offset)
        clock.time = GXDateTime(local)
        clock.status = 0x80 if local.dst() else 0

    def _encode(self, obj, attr, selector, params):
        t = self.meter.now()
        self._refresh(t)
        if obj is self.profile and attr == 2:
            return self._profile_buffer(t, selector, params)
        if obj is self.profile and attr == 7:
            return _data(DataType.UINT32, len(self.meter.profile_rows(None, t)))
        if obj is self.association and attr == 2:
            return self._object_list()
        e = ValueEventArgs(self.settings, obj, attr, selector, params)
        value = obj.getValue(self.settings, e)
        dtype = obj.getDataType(attr)
        if dtype == DataType.NONE:
            if isinstance(value, (bytes, bytearray)):
                return bytes(value)  # gurux hands complex attributes back encoded
            dtype = _GXCommon.getDLMSDataType(value)
        return _data(dtype, value)

    def _object_list(self):
        """Association LN attribute 2: {class, version, LN, access rights} per object."""
        out = GXByteBuffer()
        out.setUInt8(DataType.ARRAY)
        _GXCommon.setObjectCount(len(self.items), out)
        settings = self.settings
        for obj in self.items:
            out.setUInt8(DataType.STRUCTURE)
            out.setUInt8(4)
            _GXCommon.setData(settings, out, DataType.UINT16, int(obj.objectType))
            _GXCommon.setData(settings, out, DataType.UINT8, obj.version)
            _GXCommon.setData(settings, out, DataType.OCTET_STRING, ln_bytes(obj.logicalName))
            out.setUInt8(DataType.STRUCTURE)
            out.setUInt8(2)
            out.setUInt8(DataType.ARRAY)
            _GXCommon.setObjectCount(obj.getAttributeCount(), out)
            for a in range(1, obj.getAttributeCount() + 1):
                writable = obj.logicalName == CLOCK_LN and a == 2 and self.client != PUBLIC_CLIENT
                readable = self._may_read(obj)
                out.setUInt8(DataType.STRUCTURE)
                out.setUInt8(3)
                _GXCommon.setData(settings, out, DataType.INT8, a)
                _GXCommon.setData(settings, out, DataType.ENUM,
                                  (3 if writable else 1) if readable else 0)
                out.setUInt8(DataType.NONE)
            out.setUInt8(DataType.ARRAY)
            _GXCommon.setObjectCount(0, out)
        return bytes(out.array())

    def _profile_buffer(self, t, selector, params):
        """Mended selective access: rows by range (clock) or entry, columns as asked."""
        pg = self.profile
        captures = list(pg.captureObjects)
        rows = self.meter.profile_rows(None, t)
        columns = None
        if selector == 1:
            if not isinstance(params, list) or len(params) < 3:
                raise ValueError("range descriptor")
            restricting = params[0]
            if not (int(restricting[0]) == 8 and bytes(restricting[1]) == ln_bytes(CLOCK_LN)):
                raise ValueError("selector: only the clock column restricts a range")
            t_from = _range_value(params[1], self.meter.tz)
            t_to = _range_value(params[2], self.meter.tz)
            rows = [row for row in rows if t_from <= row[0] <= t_to]
            if len(params) > 3 and params[3]:
                wanted = []
                for sel in params[3]:
                    for k, (obj, co) in enumerate(captures):
                        if int(sel[0]) == int(obj.objectType) and bytes(sel[1]) == ln_bytes(obj.logicalName) \
                                and int(sel[2]) == co.attributeIndex:
                            wanted.append(captures[k])
                if not wanted:
                    raise ValueError("selector: no such column")
                columns = wanted
        elif selector == 2:
            if not isinstance(params, list) or len(params) < 2:
                raise ValueError("entry descriptor")
            first = max(1, int(params[0]))
            last = int(params[1]) or len(rows)
            rows = rows[first - 1:last]
            if len(params) > 3:
                c_from = max(1, int(params[2]))
                c_to = int(params[3]) or len(captures)
                columns = captures[c_from - 1:c_to]
        elif selector not in (0, None):
            raise ValueError("selector %r not supported" % selector)
        table = [[GXDateTime(self.meter.local_time(ts)), imp, exp] for ts, imp, exp in rows]
        e = ValueEventArgs(self.settings, pg, 2, 0, None)
        self.settings.index = 0
        self.settings.count = 0
        return bytes(pg.getData(self.settings, e, table, columns))

    def _set(self, apdu):
        r = _Reader(apdu, 1)
        kind = r.u8()
        invoke = r.u8()
        if kind != 1:
            return bytes([0xC5, 1, invoke, DAR_OTHER])
        class_id = r.u16()
        ln6 = r.take(6)
        attr = struct.unpack(">b", r.take(1))[0]
        if r.u8():
            return bytes([0xC5, 1, invoke, DAR_OTHER])
        obj = self._find(class_id, ln6)
        if obj is None:
            return bytes([0xC5, 1, invoke, DAR_OBJECT_UNDEFINED])
        if not (obj.logicalName == CLOCK_LN and attr == 2 and self.client in (LLS_CLIENT, HLS_CLIENT)):
            return bytes([0xC5, 1, invoke, DAR_READ_WRITE_DENIED])
        raw = r.rest()
        if raw[:2] != b"\x09\x0c":
            return bytes([0xC5, 1, invoke, DAR_TYPE_UNMATCHED])
        new = parse_datetime(raw[2:14], self.meter.tz)
        self.meter.clock_offset = new - self.meter.now()
        return bytes([0xC5, 1, invoke, DAR_SUCCESS])

    def _action(self, apdu, ciphered):
        m = self.meter
        r = _Reader(apdu, 1)
        kind = r.u8()
        invoke = r.u8()
        if kind != 1:
            return bytes([0xC7, 1, invoke, DAR_OTHER, 0])
        class_id = r.u16()
        ln6 = r.take(6)
        method = struct.unpack(">b", r.take(1))[0]
        data = None
        if r.more() and r.u8():
            data, _used = _decode_data(r.data[r.pos:])
        obj = self._find(class_id, ln6)
        if obj is None:
            return bytes([0xC7, 1, invoke, DAR_OBJECT_UNDEFINED, 0])
        if obj is self.association and method == 1 and self.hls_pending:
            reply = bytes(data) if isinstance(data, (bytes, bytearray)) else b""
            if self._check_hls_reply(reply, ciphered):
                self.hls_pending = False
                self.associated = True
                ic = m.next_server_ic()
                f_ctos = m.gmac(m.system_title, ic, self.ctos)
                return bytes([0xC7, 1, invoke, DAR_SUCCESS, 1, 0]) + _data(DataType.OCTET_STRING, f_ctos)
            self._reset_association()
            return bytes([0xC7, 1, invoke, DAR_READ_WRITE_DENIED, 0])
        if self.hls_pending:
            return _exception(EXC_NOT_ALLOWED, EXC_OPERATION_NOT_POSSIBLE)
        # Disconnect control is read-only here; no other method is offered either.
        return bytes([0xC7, 1, invoke, DAR_READ_WRITE_DENIED, 0])

    def _check_hls_reply(self, reply, ciphered):
        """f(StoC) = SC(0x10) || IC || GMAC(SC || AK || StoC) from the client."""
        m = self.meter
        if len(reply) != 17 or reply[0] != 0x10:
            return False
        ic = int.from_bytes(reply[1:5], "big")
        expected = m.gmac(self.client_title, ic, self.stoc)
        if not hmac.compare_digest(expected, reply):
            m.count("bad_tag")
            return False
        # Carried in a ciphered APDU, its counter was checked there (clients reuse it).
        if not ciphered and not m.accept_client_ic(self.client_title, ic):
            m.count("replayed_ic")
            return False
        return True


def _range_value(value, tz):
    if isinstance(value, GXDateTime):
        return value.value.timestamp()
    if isinstance(value, (bytes, bytearray)):
        return parse_datetime(value, tz)
    raise ValueError("range bound must be a date-time")


def _split_server_address(dest):
    if len(dest) == 1:
        return dest[0] >> 1, None
    if len(dest) == 2:
        return dest[0] >> 1, dest[1] >> 1
    return ((dest[0] >> 1) << 7) | (dest[1] >> 1), ((dest[2] >> 1) << 7) | (dest[3] >> 1)


def _data(dtype, value):
    buf = GXByteBuffer()
    _GXCommon.setData(_settings(), buf, dtype, value)
    return bytes(buf.array())


def _exception(state, service):
    return bytes([0xD8, state, service])


def _parse_initiate_request(raw):
    """xDLMS InitiateRequest -> (proposed conformance or None if version < 6, max PDU)."""
    r = _Reader(raw)
    if r.u8() != 0x01:
        raise ValueError("not an InitiateRequest")
    if r.u8():  # dedicated-key
        r.take(r.u8())
    if r.u8():  # response-allowed
        r.u8()
    if r.u8():  # proposed-quality-of-service
        r.u8()
    version = r.u8()
    if r.take(2) != b"\x5f\x1f" or r.u8() != 4:
        raise ValueError("conformance block")
    r.u8()  # unused bits
    conformance = int.from_bytes(r.take(3), "big")
    max_pdu = r.u16()
    return (conformance if version >= 6 else None), max_pdu


def _initiate_response(conformance, max_pdu):
    return (bytes([0x08, 0x00, 0x06, 0x5F, 0x1F, 0x04, 0x00]) + conformance.to_bytes(3, "big")
            + struct.pack(">H", max_pdu) + b"\x00\x07")


def _aare(ctx, result, diagnostic, user_info, title, mech, stoc):
    """Mended AARE (gurux's crashes when it writes the responding AP title)."""
    out = bytearray()
    out += b"\xa1\x09\x06\x07" + _CTX_PREFIX + bytes([ctx])
    out += bytes([0xA2, 0x03, 0x02, 0x01, result])
    out += bytes([0xA3, 0x05, 0xA1, 0x03, 0x02, 0x01, diagnostic])
    if title is not None:
        out += bytes([0xA4, len(title) + 2, 0x04, len(title)]) + title
    if mech is not None:
        out += b"\x88\x02\x07\x80"  # responder-acse-requirements: authentication
        out += b"\x89\x07" + _MECH_PREFIX + bytes([mech])
        out += bytes([0xAA, len(stoc) + 2, 0x80, len(stoc)]) + stoc
    if user_info is not None:
        inner = b"\x04" + _axdr_length(len(user_info)) + user_info
        out += b"\xbe" + _axdr_length(len(inner)) + inner
    return b"\x61" + _axdr_length(len(out)) + bytes(out)


# ---- push framing ----

def hdlc_frame(dest, src, control, info=b"", segmented=False):
    """One HDLC frame, format type 3, flags included.

    Mended: gurux's getHdlcFrame takes the length's top bits from the
    addresses and information only, leaving out the 7 bytes of format,
    control and checks, so frames of about 250 bytes and more get a wrong
    length. The HCS and FCS come from gurux's _GXFCS16 (CRC-16/X.25).
    """
    length = 2 + len(dest) + len(src) + 1 + 2 + ((len(info) + 2) if info else 0)
    if length > 0x7FF:
        raise ValueError("HDLC frame longer than 2047 bytes")
    head = bytearray(struct.pack(">H", 0xA000 | (0x0800 if segmented else 0) | length))
    head += dest + src + bytes([control])
    if info:
        head += struct.pack(">H", _GXFCS16.countFCS16(head, 0, len(head)))
        head += info
    head += struct.pack(">H", _GXFCS16.countFCS16(head, 0, len(head)))
    return b"\x7e" + bytes(head) + b"\x7e"


def hdlc_push_frames(meter, apdu, max_info=256, client=PUSH_CLIENT):
    """A push APDU as HDLC UI frames (LLC E6 E7 00), segmented at max_info bytes."""
    dest = bytes(GXDLMS.getAddressBytes(client, 1))
    src = bytes(GXDLMS.getAddressBytes(meter.logical_address, 1))
    data = b"\xe6\xe7\x00" + apdu
    chunks = [data[i:i + max_info] for i in range(0, len(data), max_info)]
    return [hdlc_frame(dest, src, 0x13, c, segmented=k < len(chunks) - 1)
            for k, c in enumerate(chunks)]


def mbus_push_frames(apdu, max_data=245):
    """A push APDU in M-Bus long frames as customer interfaces send it.

    68 L L 68 | C=53 A=FF CI | STSAP=01 DTSAP=67 | data | CS 16; CI counts the
    segments from 0 and has bit 4 set on the last (EN 13757-2 long frame; the
    layout the Austrian customer interfaces use, e.g. as decoded by ESPHome's
    dlms_meter).
    """
    chunks = [apdu[i:i + max_data] for i in range(0, len(apdu), max_data)] or [b""]
    frames = []
    for k, chunk in enumerate(chunks):
        ci = (k & 0x0F) | (0x10 if k == len(chunks) - 1 else 0)
        body = bytes([0x53, 0xFF, ci, 0x01, 0x67]) + chunk
        frames.append(bytes([0x68, len(body), len(body), 0x68]) + body
                      + bytes([sum(body) & 0xFF, 0x16]))
    return frames


class PushSender:
    """Sends an encrypted push every `period` real seconds to a serial path."""

    def __init__(self, meter, path, period=5.0, framing="hdlc", baudrate=9600, max_info=256):
        if framing not in ("hdlc", "mbus", "raw"):
            raise ValueError("framing is hdlc, mbus or raw")
        self.meter, self.path, self.period = meter, path, float(period)
        self.framing, self.baudrate, self.max_info = framing, baudrate, max_info
        self.sent = 0
        self._stop = threading.Event()
        self._thread = None

    def frames(self, t=None):
        apdu = self.meter.push_apdu(t)
        if self.framing == "hdlc":
            return hdlc_push_frames(self.meter, apdu, self.max_info)
        if self.framing == "mbus":
            return mbus_push_frames(apdu)
        return [apdu]

    def start(self):
        from host_tools.sim.ports import open_serial

        port = open_serial(self.path, self.baudrate)
        self._thread = threading.Thread(target=self._run, args=(port,), name="dlms-push",
                                        daemon=True)
        self._thread.start()
        return self

    def _run(self, port):
        line = _Line(self.path, self.baudrate, self._stop, port)
        try:
            while line.port is not None and not self._stop.is_set():
                try:
                    for frame in self.frames():
                        frame = self.meter.faults.apply(frame)
                        if frame is not None:
                            line.port.write(frame)
                    line.port.flush()
                except (OSError, SerialException):
                    line.reopen()
                    continue
                line.ok()
                self.sent += 1
                self._stop.wait(self.period)
        finally:
            line.close()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


# ---- transports ----

REOPEN_TRIES = 300  # consecutive failed attempts before a serial transport gives up
REOPEN_WAIT = 0.1  # seconds between attempts


class _Line:
    """A serial port that is reopened after a hangup, as a USB adapter's
    driver recovers: pyserial raises SerialException ("device reports
    readiness to read but returned no data") when a pty's other side closes,
    e.g. while a virtual board resets. At most REOPEN_TRIES attempts, each
    after REOPEN_WAIT s, without a successful exchange in between; then
    `port` is None and the transport's thread ends. stop() ends it too."""

    def __init__(self, path, baudrate, stop, port):
        self.path, self.baudrate, self._stop = path, baudrate, stop
        self.port = port
        self.reopens = 0
        self._left = REOPEN_TRIES

    def ok(self):
        self._left = REOPEN_TRIES

    def reopen(self):
        from host_tools.sim.ports import open_serial

        self.close()
        while self._left > 0 and not self._stop.wait(REOPEN_WAIT):
            self._left -= 1
            try:
                self.port = open_serial(self.path, self.baudrate)
                self.reopens += 1
                return
            except OSError:
                continue  # not there again yet

    def close(self):
        if self.port is not None:
            try:
                self.port.close()
            except (OSError, SerialException):
                pass
            self.port = None

class SerialServer:
    """Serves HDLC on a serial device or pty path, one client at a time (a bus)."""

    def __init__(self, meter, path, baudrate=9600, record=False):
        self.meter, self.path, self.baudrate = meter, path, baudrate
        self.session = None
        # record=True: every byte that crossed the line, as ("rx"|"tx", bytes)
        # chunks in order (rx: from the client), for counting what a read cost
        self.transcript = [] if record else None
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        from host_tools.sim.ports import open_serial

        port = open_serial(self.path, self.baudrate)
        self.session = MeterSession(self.meter, InterfaceType.HDLC)
        self._thread = threading.Thread(target=self._run, args=(port,), name="dlms-serial",
                                        daemon=True)
        self._thread.start()
        self.ready.set()
        return self

    def _run(self, port):
        line = _Line(self.path, self.baudrate, self._stop, port)
        try:
            while line.port is not None and not self._stop.is_set():
                port = line.port
                try:
                    data = port.read(1)  # waits up to the port timeout for a first byte
                    if data and port.in_waiting:
                        data += port.read(port.in_waiting)
                except (OSError, SerialException):
                    line.reopen()
                    continue
                self.session.idle()
                if not data:
                    continue
                line.ok()
                if self.transcript is not None:
                    self.transcript.append(("rx", bytes(data)))
                try:
                    replies = self.session.receive(data)
                except Exception:  # a simulator bug must not silence the meter for the rest of a run
                    traceback.print_exc()
                    self.session = MeterSession(self.meter, InterfaceType.HDLC)
                    continue
                try:
                    for chunk in replies:
                        delay = self.meter.faults.take_delay()
                        if delay:
                            self._stop.wait(delay)
                        port.write(chunk)
                        if self.transcript is not None:
                            self.transcript.append(("tx", bytes(chunk)))
                    port.flush()
                except (OSError, SerialException):
                    line.reopen()  # the answer is lost, as on a line that dropped
        finally:
            line.close()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _WrapperHandler(socketserver.BaseRequestHandler):
    def handle(self):
        meter = self.server.meter
        session = MeterSession(meter, InterfaceType.WRAPPER)
        sock = self.request
        sock.settimeout(1.0)
        while not self.server.stopping.is_set():
            try:
                data = sock.recv(65536)
            except socket.timeout:
                if time.monotonic() - session.last_activity > INACTIVITY_S:
                    return  # an idle client is dropped, as meters do
                continue
            except OSError:
                return
            if not data:
                return
            try:
                replies = session.receive(data)
            except ConnectionError:
                return
            except Exception:  # log a simulator bug and drop this client, not the server
                traceback.print_exc()
                return
            for chunk in replies:
                delay = meter.faults.take_delay()
                if delay:
                    time.sleep(delay)
                sock.sendall(chunk)


class TcpServer(socketserver.ThreadingTCPServer):
    """Serves the IEC 62056-47 wrapper on a TCP port; port 0 picks a free one."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, meter, port=4059, host="127.0.0.1"):
        super().__init__((host, port), _WrapperHandler)
        self.meter = meter
        self.stopping = threading.Event()
        self._thread = None

    @property
    def port(self):
        return self.server_address[1]

    def start(self):
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="dlms-tcp", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.stopping.set()
        self.shutdown()
        self.server_close()
