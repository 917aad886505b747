"""The DLMS meter simulator (host_tools/sim/dlms_meter.py), read by independent clients.

dlms-cosem 25.1.0 reads over the TCP wrapper (its HDLC reader stalls on
0x7E payload bytes and loops on exception-responses, see PEERS.md);
gurux-dlms's own GXDLMSClient reads over HDLC on a pty pair, and drives the
negative cases. Push frames are opened here with `cryptography`'s AES-GCM
directly, not through any DLMS library.

The meter's clock is frozen (a Clock whose monotonic source does not move),
so every reading can be compared with the household model exactly.
"""

import datetime
import logging
import struct
import subprocess
import sys
import time

import pytest
import serial
import structlog
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from dlms_cosem import cosem, enumerations, utils
from dlms_cosem.client import DataResultError, DlmsClient
from dlms_cosem.cosem.capture_object import CaptureObject
from dlms_cosem.cosem.selective_access import RangeDescriptor
from dlms_cosem.exceptions import DlmsClientException
from dlms_cosem.io import BlockingTcpIO, TcpTransport
from dlms_cosem.security import (HighLevelSecurityGmacAuthentication,
                                 LowLevelSecurityAuthentication, NoSecurityAuthentication)
from gurux_dlms.GXByteBuffer import GXByteBuffer
from gurux_dlms.GXDLMSClient import GXDLMSClient
from gurux_dlms.GXReplyData import GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType, Security
from gurux_dlms.objects import GXDLMSClock, GXDLMSProfileGeneric, GXDLMSRegister
from gurux_dlms.secure.GXDLMSSecureClient import GXDLMSSecureClient

from host_tools.sim import dlms_meter as dm
from host_tools.sim.household import UTC, Clock, Household
from host_tools.sim.ports import PtyPair

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

NOW = datetime.datetime(2025, 6, 21, 10, 0, 7, tzinfo=UTC)
CLIENT_TITLE = b"PGWTEST1"


_IC = [int(time.time()) & 0xFFFFFFF]


def next_ic():
    """A client invocation counter above any this meter has seen (they never go back)."""
    _IC[0] += 100000
    return _IC[0]


def frozen_clock():
    return Clock(start=NOW, monotonic=lambda: 0.0)


@pytest.fixture(scope="module")
def meter():
    clock = frozen_clock()
    house = Household(seed=5, start=NOW - datetime.timedelta(days=11))
    return dm.Meter(household=house, clock=clock)


@pytest.fixture(scope="module")
def tcp(meter):
    srv = dm.TcpServer(meter, 0).start()
    yield srv
    srv.stop()


def cosem_client(port, kind):
    io = BlockingTcpIO("127.0.0.1", port, timeout=5)
    if kind == "hls":
        return DlmsClient(transport=TcpTransport(client_logical_address=1, server_logical_address=1, io=io),
                          authentication=HighLevelSecurityGmacAuthentication(challenge_length=32),
                          encryption_key=dm.DEFAULT_EK, authentication_key=dm.DEFAULT_AK,
                          client_system_title=CLIENT_TITLE,
                          client_initial_invocation_counter=next_ic())
    if kind == "lls":
        return DlmsClient(transport=TcpTransport(client_logical_address=17, server_logical_address=1, io=io),
                          authentication=LowLevelSecurityAuthentication(secret=dm.DEFAULT_PASSWORD))
    return DlmsClient(transport=TcpTransport(client_logical_address=16, server_logical_address=1, io=io),
                      authentication=NoSecurityAuthentication())


def attr(interface, obis, index):
    return cosem.CosemAttribute(interface=interface, instance=cosem.Obis(*obis), attribute=index)


REG = enumerations.CosemInterface.REGISTER
CLOCK = attr(enumerations.CosemInterface.CLOCK, (0, 0, 1, 0, 0), 2)
PROFILE = attr(enumerations.CosemInterface.PROFILE_GENERIC, (1, 0, 99, 1, 0), 2)


def test_public_client_reads_clock_and_registers_with_scaler_and_unit(meter, tcp):
    s = meter.sample()
    with cosem_client(tcp.port, "public").session() as c:
        clock = utils.parse_as_dlms_data(c.get(CLOCK))
        energy = utils.parse_as_dlms_data(c.get(attr(REG, (1, 0, 1, 8, 0), 2)))
        scaler_unit = utils.parse_as_dlms_data(c.get(attr(REG, (1, 0, 1, 8, 0), 3)))
        volts = utils.parse_as_dlms_data(c.get(attr(REG, (1, 0, 32, 7, 0), 2)))
        v_su = utils.parse_as_dlms_data(c.get(attr(REG, (1, 0, 32, 7, 0), 3)))
        amps_su = utils.parse_as_dlms_data(c.get(attr(REG, (1, 0, 31, 7, 0), 3)))
        with pytest.raises(DataResultError):  # the load profile needs LLS or HLS
            c.get(PROFILE)
    # 2025-06-21 12:00:07 CEST: deviation -120 (minutes local to UTC), DST status bit
    assert bytes(clock) == bytes.fromhex("07e90615ff0c000700ff8880"), bytes(clock).hex()
    assert energy == int(s.import_wh), (energy, s.import_wh)
    assert scaler_unit == [0, 30]  # Wh, scaler 0
    assert v_su == [-1, 35] and volts == round(s.voltage[0] * 10)  # V, scaler -1
    assert amps_su == [-2, 33]  # A, scaler -2


def test_lls_reads_a_1000_row_profile_by_block_transfer(meter, tcp):
    blocks = meter.stats["blocks"]
    with cosem_client(tcp.port, "lls").session() as c:
        rows = utils.parse_as_dlms_data(c.get(PROFILE))
    assert len(rows) >= 1000, len(rows)
    assert meter.stats["blocks"] - blocks > 20, "a 26 KB buffer in <=1 KB blocks"
    expected = meter.household.profile(meter.household.t_start, meter.now())
    assert len(rows) == len(expected)
    for row, (t, imp, exp) in zip(rows[-50:], expected[-50:]):
        assert row[1:] == [int(imp), int(exp)]
        local = datetime.datetime.fromtimestamp(t, meter.tz)
        assert bytes(row[0])[:9] == struct.pack(">HBBBBBBB", local.year, local.month, local.day,
                                                 0xFF, local.hour, local.minute, 0, 0)


def test_profile_by_range(meter, tcp):
    frm = datetime.datetime(2025, 6, 20, 0, 0, tzinfo=UTC)
    to = datetime.datetime(2025, 6, 20, 3, 0, tzinfo=UTC)
    rd = RangeDescriptor(restricting_object=CaptureObject(cosem_attribute=CLOCK, data_index=0),
                         from_value=frm, to_value=to)
    with cosem_client(tcp.port, "lls").session() as c:
        rows = utils.parse_as_dlms_data(c.get(PROFILE, access_descriptor=rd))
    assert len(rows) == 13  # both ends included, every 15 minutes
    assert rows[0][1] == int(meter.household.energy(frm)[0])


def test_hls_gmac_association_over_tcp(meter, tcp):
    s = meter.sample()
    with cosem_client(tcp.port, "hls").session() as c:
        exported = utils.parse_as_dlms_data(c.get(attr(REG, (1, 0, 2, 8, 0), 2)))
        rows = utils.parse_as_dlms_data(c.get(PROFILE))
    assert exported == int(s.export_wh)
    assert len(rows) >= 1000


def test_wrong_password_and_wrong_keys_are_refused(meter, tcp):
    io = BlockingTcpIO("127.0.0.1", tcp.port, timeout=5)
    bad = DlmsClient(transport=TcpTransport(client_logical_address=17, server_logical_address=1, io=io),
                     authentication=LowLevelSecurityAuthentication(secret=b"wrong"))
    bad.connect()
    with pytest.raises(DlmsClientException, match="REJECTED_PERMANENT"):
        bad.associate()
    bad.disconnect()
    io = BlockingTcpIO("127.0.0.1", tcp.port, timeout=5)
    tags = meter.stats["bad_tag"]
    bad = DlmsClient(transport=TcpTransport(client_logical_address=1, server_logical_address=1, io=io),
                     authentication=HighLevelSecurityGmacAuthentication(challenge_length=32),
                     encryption_key=bytes(16), authentication_key=dm.DEFAULT_AK,
                     client_system_title=b"INTRUDER")
    bad.connect()
    with pytest.raises(DlmsClientException, match="REJECTED_PERMANENT"):
        bad.associate()
    bad.disconnect()
    assert meter.stats["bad_tag"] == tags + 1, "the glo-initiate-request tag was checked"


# ---- gurux's client: HDLC on a pty pair, and the honest-peer checks ----

def read_hdlc_frame(port, timeout=5.0):
    deadline = time.monotonic() + timeout
    buf = bytearray()
    while time.monotonic() < deadline:
        buf += port.read(1 if len(buf) < 3 else max(1, ((buf[1] & 7) << 8 | buf[2]) + 2 - len(buf)))
        while buf and buf[0] != 0x7E:
            del buf[0]
        if len(buf) >= 3 and len(buf) == ((buf[1] & 7) << 8 | buf[2]) + 2:
            return bytes(buf)
    raise TimeoutError("no HDLC frame within %.1fs (got %s)" % (timeout, bytes(buf).hex()))


class GuruxOverSerial:
    def __init__(self, client, port):
        self.client, self.port = client, port

    def exchange(self, frame, reply=None):
        reply = reply if reply is not None else GXReplyData()
        self.port.write(frame)
        self.client.getData(GXByteBuffer(read_hdlc_frame(self.port)), reply)
        return reply

    def request(self, frames):
        reply = GXReplyData()
        for frame in frames:
            self.exchange(frame, reply)
        while reply.isMoreData():
            self.exchange(self.client.receiverReady(reply), reply)
        return reply

    def read(self, obj, index):
        reply = self.request(self.client.read(obj, index))
        self.client.updateValue(obj, index, reply.value)
        return obj


@pytest.fixture()
def hdlc_line(meter):
    with PtyPair() as pair:
        srv = dm.SerialServer(meter, pair.a).start()
        port = serial.Serial(pair.b, 9600, timeout=0.2)
        yield port
        port.close()
        srv.stop()


def test_gurux_client_over_hdlc_reads_1000_profile_rows_by_entry(meter, hdlc_line):
    c = GuruxOverSerial(GXDLMSClient(True, 17, 1, Authentication.LOW, "12345678", InterfaceType.HDLC),
                        hdlc_line)
    c.client.hdlcSettings.maxInfoRX = c.client.hdlcSettings.maxInfoTX = 512
    reply = c.exchange(c.client.snrmRequest())
    c.client.parseUAResponse(reply.data)
    assert c.client.hdlcSettings.maxInfoTX == 512, "the meter accepted the proposed frame size"
    c.client.parseAareResponse(c.request(c.client.aarqRequest()).data)
    reg = c.read(c.read(GXDLMSRegister("1.0.1.8.0.255"), 3), 2)
    assert (reg.value, reg.scaler, int(reg.unit)) == (int(meter.sample().import_wh), 1.0, 30)
    clock = c.read(GXDLMSClock("0.0.1.0.0.255"), 2)
    assert clock.time.value.astimezone(UTC).replace(microsecond=0) == NOW
    pg = c.read(GXDLMSProfileGeneric("1.0.99.1.0.255"), 3)
    frames_before = meter.stats["frames_out"]
    reply = c.request(c.client.readRowsByEntry(pg, 1, 1000))
    c.client.updateValue(pg, 2, reply.value)
    assert len(pg.buffer) == 1000
    assert meter.stats["frames_out"] - frames_before > 40, "segmented HDLC frames and blocks"
    first = meter.household.profile(meter.household.t_start, meter.household.t_start)[0]
    assert pg.buffer[0][1:] == [int(first[1]), int(first[2])]
    c.request(c.client.releaseRequest())
    c.exchange(c.client.disconnectRequest())


def test_gurux_client_hls_gmac_over_hdlc(meter, hdlc_line):
    cl = GXDLMSSecureClient(True, 1, 1, Authentication.HIGH_GMAC, None, InterfaceType.HDLC)
    cl.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
    cl.ciphering.systemTitle = b"GRXTEST1"
    cl.ciphering.blockCipherKey = dm.DEFAULT_EK
    cl.ciphering.authenticationKey = dm.DEFAULT_AK
    cl.ciphering.invocationCounter = next_ic()
    c = GuruxOverSerial(cl, hdlc_line)
    cl.parseUAResponse(c.exchange(cl.snrmRequest()).data)
    cl.parseAareResponse(c.request(cl.aarqRequest()).data)
    cl.parseApplicationAssociationResponse(c.request(cl.getApplicationAssociationRequest()).data)
    reg = c.read(GXDLMSRegister("1.0.2.8.0.255"), 2)
    assert reg.value == int(meter.sample().export_wh)
    c.exchange(cl.disconnectRequest())


def wrapper_session(meter):
    """A gurux HLS client talking to a MeterSession in memory over the TCP wrapper."""
    session = dm.MeterSession(meter, InterfaceType.WRAPPER)
    cl = GXDLMSSecureClient(True, 1, 1, Authentication.HIGH_GMAC, None, InterfaceType.WRAPPER)
    cl.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
    cl.ciphering.systemTitle = b"GRXTEST2"
    cl.ciphering.blockCipherKey = dm.DEFAULT_EK
    cl.ciphering.authenticationKey = dm.DEFAULT_AK
    cl.ciphering.invocationCounter = next_ic()

    def send(frame):
        reply = GXReplyData()
        for out in session.receive(bytes(frame)):
            cl.getData(GXByteBuffer(out), reply)
        return reply

    for frame in cl.aarqRequest():
        cl.parseAareResponse(send(frame).data)
    for frame in cl.getApplicationAssociationRequest():
        cl.parseApplicationAssociationResponse(send(frame).data)
    return session, cl, send


def test_ciphered_request_with_a_bad_tag_is_refused(meter):
    session, cl, send = wrapper_session(meter)
    frame = bytearray(cl.read(GXDLMSRegister("1.0.1.8.0.255"), 2)[0])
    frame[-1] ^= 0x01  # last byte of the GCM tag
    tags = meter.stats["bad_tag"]
    (out,) = session.receive(bytes(frame))
    assert out[8:] == bytes([0xD8, 0x01, 0x05]), out.hex()  # exception: deciphering-error
    assert meter.stats["bad_tag"] == tags + 1
    reply = send(cl.read(GXDLMSRegister("1.0.1.8.0.255"), 2)[0])  # the association survives
    assert reply.value == int(meter.sample().import_wh)


def test_replayed_invocation_counter_is_refused(meter):
    session, cl, send = wrapper_session(meter)
    frame = bytes(cl.read(GXDLMSRegister("1.0.1.8.0.255"), 2)[0])
    first = session.receive(frame)[0]
    assert first[8] in (0xCC, 0xDB), "glo-get-response or general-glo-ciphering"
    replays = meter.stats["replayed_ic"]
    (again,) = session.receive(frame)  # same bytes: same invocation counter
    assert again[8:11] == bytes([0xD8, 0x01, 0x06]), again.hex()  # invocation-counter-error
    apdu = frame[8:]
    pos = 2 + apdu[1] if apdu[0] == 0xDB else 1  # past the system title
    pos += 1 + (apdu[pos] & 0x7F if apdu[pos] & 0x80 else 0)  # past the length
    ic = int.from_bytes(apdu[pos + 1:pos + 5], "big")
    assert int.from_bytes(again[11:15], "big") == ic + 1, "the counter the meter expects"
    assert meter.stats["replayed_ic"] == replays + 1


def test_unciphered_request_in_a_ciphered_association_is_refused(meter):
    session, cl, _send = wrapper_session(meter)
    plain = bytes.fromhex("c001c1000300000108 00ff0200".replace(" ", ""))
    (out,) = session.receive(bytes.fromhex("0001000100010000") [:6] + struct.pack(">H", len(plain)) + plain)
    assert out[8] == 0xD8


def test_hdlc_link_handles_garbage_bad_fcs_and_disc(meter, hdlc_line):
    cl = GXDLMSClient(True, 16, 1, Authentication.NONE, None, InterfaceType.HDLC)
    snrm = bytes(cl.snrmRequest())
    bad = bytearray(snrm)
    bad[-2] ^= 0xFF  # FCS
    hdlc_line.write(b"\x00\xff noise \x7e\x7e" + bytes(bad))
    hdlc_line.write(snrm)
    ua = read_hdlc_frame(hdlc_line)
    assert ua[5] == 0x73, ua.hex()  # UA: the bad frame was dropped, the good one answered
    assert hdlc_line.read(64) == b"", "nothing answers the corrupted SNRM"
    hdlc_line.write(bytes(cl.disconnectRequest(True)))
    assert read_hdlc_frame(hdlc_line)[5] == 0x73  # UA to DISC
    hdlc_line.write(bytes(cl.disconnectRequest(True)))
    assert read_hdlc_frame(hdlc_line)[5] == 0x1F  # DM: already disconnected


def test_faults_drop_and_corrupt_hdlc_answers(meter, hdlc_line):
    cl = GXDLMSClient(True, 16, 1, Authentication.NONE, None, InterfaceType.HDLC)
    snrm = bytes(cl.snrmRequest())
    meter.faults.drop_next()
    hdlc_line.write(snrm)
    assert hdlc_line.read(64) == b"", "a half-dead meter"
    meter.faults.corrupt_next()
    hdlc_line.write(snrm)
    bad = read_hdlc_frame(hdlc_line)
    good_fcs = dm._GXFCS16.countFCS16(bad[1:-3], 0, len(bad) - 4)
    assert int.from_bytes(bad[-3:-1], "big") != good_fcs
    hdlc_line.write(snrm)
    assert read_hdlc_frame(hdlc_line)[5] == 0x73
    assert meter.faults.dropped >= 1 and meter.faults.corrupted >= 1


def test_mode_e_sign_on(hdlc_line):
    hdlc_line.write(b"/?!\r\n")
    line = hdlc_line.read_until(b"\r\n")
    assert line.startswith(b"/PGW5\\2") and line.endswith(b"\r\n"), line


# ---- push ----

def open_push(meter, apdu):
    """general-glo-ciphering -> plaintext, with AES-GCM from `cryptography` directly."""
    assert apdu[0] == 0xDB and apdu[1] == 8
    title = apdu[2:10]
    assert title == meter.system_title
    length, pos = apdu[10], 11
    if length & 0x80:
        n = length & 0x7F
        length, pos = int.from_bytes(apdu[11:11 + n], "big"), 11 + n
    content = apdu[pos:pos + length]
    assert len(content) == length
    sc, ic = content[0], int.from_bytes(content[1:5], "big")
    assert sc == 0x30  # authenticated and encrypted, suite 0
    ct, tag = content[5:-12], content[-12:]
    # A 12-byte tag: AESGCM wants 16, so check it by recomputing (GCM is CTR + GHASH).
    iv = title + ic.to_bytes(4, "big")
    full = AESGCM(meter.ek).encrypt(iv, b"\x00" * len(ct), bytes([sc]) + meter.ak)
    keystream = full[:-16]
    plain = bytes(a ^ b for a, b in zip(ct, keystream))
    assert AESGCM(meter.ek).encrypt(iv, plain, bytes([sc]) + meter.ak)[-16:-4] == tag, "GCM tag"
    return plain, ic


def test_push_decrypts_with_plain_aes_gcm(meter):
    apdu = meter.push_apdu()
    plain, ic = open_push(meter, apdu)
    s = meter.sample()
    assert plain[0] == 0x0F  # data-notification
    assert plain[5] == 0x0C  # date-time present: 12 bytes
    body = utils.parse_as_dlms_data(plain[18:])
    assert body[1] == bytes.fromhex("0100010800ff") and body[2] == int(s.import_wh)
    assert body[3] == [0, 30]  # scaler 0, Wh
    assert body[4] == bytes.fromhex("0100020800ff") and body[5] == int(s.export_wh)
    assert body[7] == bytes.fromhex("0100010700ff") and body[8] == max(round(s.grid_w), 0)  # W
    assert len(body) == 1 + 3 * 10
    _plain2, ic2 = open_push(meter, meter.push_apdu())
    assert ic2 > ic, "each push has a new invocation counter"


def test_push_frames_hdlc_and_mbus(meter):
    push = dm.PushSender(meter, "/unused", framing="hdlc", max_info=128)
    frames = push.frames()
    assert len(frames) >= 2, "segmented at 128 bytes"
    info = b""
    for k, f in enumerate(frames):
        assert f[0] == 0x7E and f[-1] == 0x7E and f[5] == 0x13  # UI frames
        assert bool(f[1] & 0x08) == (k < len(frames) - 1), "segmentation bit on all but the last"
        info += f[8:-3]
    assert info[:3] == b"\xe6\xe7\x00"
    open_push(meter, info[3:])
    frames = dm.PushSender(meter, "/unused", framing="mbus").frames()
    data = b""
    for k, f in enumerate(frames):
        assert f[0] == 0x68 and f[3] == 0x68 and f[1] == f[2] == len(f) - 6 and f[-1] == 0x16
        assert f[-2] == sum(f[4:-2]) & 0xFF
        assert f[6] == (k | (0x10 if k == len(frames) - 1 else 0))  # CI: sequence, last-segment bit
        data += f[9:-2]
    open_push(meter, data)


def test_cli_serves_tcp_and_pushes_to_a_pty():
    with PtyPair() as pair:
        proc = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "sim", "dlms", "--tcp", "0",
                                 "--push", pair.a, "--push-period", "0.2", "--push-framing", "raw"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            lines = []
            while not lines or "Ctrl-C" not in lines[-1]:
                line = proc.stdout.readline()
                assert line, "".join(lines)
                lines.append(line)
            assert "TCP wrapper on 127.0.0.1:" in lines[0] and "push:" in "".join(lines)
            port = serial.Serial(pair.b, timeout=10)
            apdu = port.read(11)
            assert apdu[:2] == b"\xdb\x08", apdu.hex()
            port.close()
        finally:
            proc.terminate()
            assert proc.wait(10) == 0


def test_clock_is_writable_by_lls_only(meter, tcp):
    later = datetime.datetime(2025, 6, 21, 13, 30, 0, tzinfo=UTC)
    stamp = bytes.fromhex("090c07e90615ff0f1e0000ff8880")  # 15:30:00 CEST = 13:30 UTC
    try:
        with cosem_client(tcp.port, "public").session() as c:
            assert c.set(CLOCK, stamp).result == enumerations.DataAccessResult.READ_WRITE_DENIED
        with cosem_client(tcp.port, "lls").session() as c:
            assert c.set(CLOCK, stamp).result == enumerations.DataAccessResult.SUCCESS
            now = utils.parse_as_dlms_data(c.get(CLOCK))
        assert bytes(now)[4:8] == bytes([0xFF, 15, 30, 0])
        assert meter.clock_offset == later.timestamp() - NOW.timestamp()
    finally:
        meter.clock_offset = 0.0


hypothesis = pytest.importorskip("hypothesis")


_PUBLIC_AARQ = bytes(GXDLMSClient(True, 16, 1, Authentication.NONE, None,
                                  InterfaceType.WRAPPER).aarqRequest()[0])


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(hypothesis.strategies.binary(max_size=300), hypothesis.strategies.integers(0, 299),
                  hypothesis.strategies.sampled_from([0x60, 0x62, 0xC0, 0xC1, 0xC3, 0xC8, 0xDB, 0x0F]))
def test_session_survives_any_bytes(meter, data, cut, tag):
    # Mutated frames, noise, and random APDUs after a real association: a specific
    # reaction or none, never a crash.
    session = dm.MeterSession(meter, InterfaceType.HDLC)
    snrm = bytes.fromhex("7ea0070321930f017e")
    session.receive(snrm)
    mutated = bytearray(snrm + data)
    if mutated:
        mutated[cut % len(mutated)] ^= 0x5A
    for chunk in (bytes(mutated), data, b"\x7e\xa0\x08" + data[:6] + b"\x7e"):
        out = session.receive(chunk)
        assert all(isinstance(b, bytes) for b in out)
    wrapper = dm.MeterSession(meter, InterfaceType.WRAPPER)
    (aare,) = wrapper.receive(_PUBLIC_AARQ)
    assert aare[8] == 0x61
    apdu = bytes([tag]) + data
    out = wrapper.receive(b"\x00\x01\x00\x10\x00\x01" + struct.pack(">H", len(apdu)) + apdu)
    assert len(out) <= 1


class HungUp:
    """A port whose pty peer closed (a board resetting): what pyserial raises then."""

    in_waiting = 0

    def read(self, n):
        raise serial.SerialException("device reports readiness to read but returned no data "
                                     "(device disconnected or multiple access on port?)")

    def write(self, data):
        raise serial.SerialException("write failed: [Errno 5] Input/output error")

    def flush(self):
        pass

    def close(self):
        pass


@pytest.fixture()
def first_open_hung_up(monkeypatch):
    """ports.open_serial whose first port is hung up; later opens are real."""
    from host_tools.sim import ports

    real = ports.open_serial
    opened = []

    def open_serial(path, baudrate=9600, timeout=0.05):
        port = HungUp() if not opened else real(path, baudrate, timeout)
        opened.append(path)  # once open: pyserial's open() flushes what was sent before
        return port

    monkeypatch.setattr(ports, "open_serial", open_serial)
    monkeypatch.setattr(dm, "REOPEN_WAIT", 0.01)
    return opened


def test_serial_server_reopens_its_port_after_a_hangup(meter, first_open_hung_up):
    with PtyPair() as pair:
        srv = dm.SerialServer(meter, pair.a).start()
        port = serial.Serial(pair.b, 9600, timeout=3)  # generous: a loaded CI machine
        try:
            deadline = time.monotonic() + 5
            while len(first_open_hung_up) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)  # until the server has its port again
            c = GuruxOverSerial(GXDLMSClient(True, 16, 1, Authentication.NONE, None, InterfaceType.HDLC), port)
            c.client.parseUAResponse(c.exchange(c.client.snrmRequest()).data)  # UA: it serves again
            assert first_open_hung_up == [pair.a, pair.a], first_open_hung_up
        finally:
            port.close()
            srv.stop()
    assert not srv._thread.is_alive(), "stop() ends the thread"


def test_push_sender_reopens_its_port_after_a_hangup(meter, first_open_hung_up):
    with PtyPair() as pair:
        push = dm.PushSender(meter, pair.a, period=0.05, framing="mbus").start()
        port = serial.Serial(pair.b, 9600, timeout=2)
        try:
            assert port.read(1) == b"\x68", "an M-Bus frame after the reopen"
            assert first_open_hung_up == [pair.a, pair.a], first_open_hung_up
        finally:
            port.close()
            push.stop()
    assert not push._thread.is_alive() and push.sent >= 1, push.sent


def test_serial_server_gives_up_after_bounded_reopen_attempts(meter, monkeypatch):
    from host_tools.sim import ports

    tries = []

    def open_serial(path, baudrate=9600, timeout=0.05):
        tries.append(path)
        if len(tries) == 1:
            return HungUp()
        raise OSError("cannot open %s: gone" % path)

    monkeypatch.setattr(ports, "open_serial", open_serial)
    monkeypatch.setattr(dm, "REOPEN_TRIES", 3)
    monkeypatch.setattr(dm, "REOPEN_WAIT", 0.01)
    srv = dm.SerialServer(meter, "/dev/gone").start()
    srv._thread.join(timeout=5)
    assert not srv._thread.is_alive() and len(tries) == 1 + 3, tries
