"""lib/dlms/hdlc.py against gurux-dlms 1.0.203 and dlms-cosem 25.1.0, byte for byte.

Gurux's client encodes the SNRM, DISC, I frames of its requests and the RR it
sends for the next segment; it also decodes what our encoder builds for a
server. dlms-cosem's `dlms_cosem.hdlc.frames` encodes and parses SNRM, UA, DISC,
RR and I frames. Hypothesis fuzzes Framer.feed and Link.receive_data.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib"))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from crc16 import crc16_modbus, crc16_x25  # noqa: E402
from dlms import hdlc  # noqa: E402
from dlms.hdlc import Frame, FrameError, Framer, Link  # noqa: E402

gurux = pytest.importorskip("gurux_dlms")
from gurux_dlms import GXByteBuffer, GXDLMSClient, GXReplyData  # noqa: E402
from gurux_dlms.enums import Authentication, InterfaceType  # noqa: E402
from gurux_dlms.objects import GXDLMSClock, GXDLMSRegister  # noqa: E402
from dlms_cosem.hdlc import frames as dc_frames  # noqa: E402
from dlms_cosem.hdlc.address import HdlcAddress  # noqa: E402

SERVER = hdlc.server_address(1, 17)
RR, UA, PF = 0x01, 0x63, 0x10  # control field values (IEC 62056-46); dlms.hdlc's are const()
CLIENT = hdlc.client_address(16)
AARE_APDU = bytes.fromhex(
    "6129a109060760857405080101a203020100a305a103020100be10040e0800065f1f0400001e1d04c80007")


def gx_client(logical=1, physical=17, size=0, **hdlc_settings):
    server = GXDLMSClient.getServerAddress(logical, physical, size) if physical is not None else logical
    c = GXDLMSClient(True, 16, server, Authentication.NONE, None, InterfaceType.HDLC)
    if size:
        c.serverAddressSize = size
    for k, v in hdlc_settings.items():
        setattr(c.hdlcSettings, k, v)
    return c


def srv(control, info=b"", seg=False, server=SERVER):
    return hdlc.encode(CLIENT, server, control, info, seg)


def events(link):
    out = []
    while (e := link.next_event()) is not None:
        out.append(e)
    return out


# ---- CRCs ------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_crc_modbus_matches_pymodbus(data):
    from pymodbus.framer.rtu import FramerRTU
    want = FramerRTU.compute_CRC(data)  # high byte first as an int
    got = crc16_modbus(data)
    assert ((got & 0xFF) << 8 | got >> 8) == want


@given(st.binary(max_size=300))
def test_crc_x25_matches_dlms_cosem(data):
    assert crc16_x25(data).to_bytes(2, "little") == dc_frames.FCS.calculate_for(data)


# ---- gurux -----------------------------------------------------------------


@pytest.mark.parametrize("logical,physical,size", [(1, 17, 0), (1, None, 1), (1, 0x3FFF, 4),
                                                   (0x3FFF, 0x3FFF, 4), (0x7F, 0x7F, 2)])
def test_snrm_and_disc_match_gurux(logical, physical, size):
    c = gx_client(logical, physical, size)
    server = hdlc.server_address(logical, physical, size)
    link = Link(server, 16)
    assert link.connect(0) == bytes(c.snrmRequest())
    assert link.disconnect(0) == bytes(c.disconnectRequest(True))


@pytest.mark.parametrize("tx,rx,wtx,wrx", [(1024, 1024, 1, 1), (128, 512, 1, 1), (2030, 2030, 7, 7),
                                           (64, 200, 3, 1), (128, 128, 1, 1)])
def test_negotiating_snrm_matches_gurux(tx, rx, wtx, wrx):
    c = gx_client(maxInfoTX=tx, maxInfoRX=rx, windowSizeTX=wtx, windowSizeRX=wrx)
    link = Link(SERVER, 16, max_info_tx=tx, max_info_rx=rx, window_tx=wtx, window_rx=wrx)
    assert link.connect(0) == bytes(c.snrmRequest())


@pytest.mark.parametrize("tx,rx,wtx,wrx", [(154, 154, 1, 1), (1024, 512, 1, 1), (2030, 100, 7, 3),
                                           (128, 128, 1, 1), (300, 60, 1, 2)])
def test_ua_parameters_read_as_gurux_reads_them(tx, rx, wtx, wrx):
    # the UA as meters send it, all four parameters present (like the one in
    # dlms-cosem's tests: 05 01 9a 06 01 9a 07 04 00000001 08 04 00000001)
    params = (b"\x05\x02" + tx.to_bytes(2, "big") + b"\x06\x02" + rx.to_bytes(2, "big")
              + b"\x07\x04" + wtx.to_bytes(4, "big") + b"\x08\x04" + wrx.to_bytes(4, "big"))
    ua = srv(UA | PF, b"\x81\x80" + bytes([len(params)]) + params)
    c = gx_client(maxInfoTX=2030, maxInfoRX=2030, windowSizeTX=7, windowSizeRX=7)
    c.snrmRequest()
    c.parseUAResponse(GXByteBuffer(Frame.from_bytes(ua).info))
    link = Link(SERVER, 16, max_info_tx=2030, max_info_rx=2030, window_tx=7, window_rx=7)
    link.connect(0)
    link.receive_data(ua)
    s = c.hdlcSettings
    assert (link.max_info_tx, link.max_info_rx, link.window_tx, link.window_rx) == (
        s.maxInfoTX, s.maxInfoRX, s.windowSizeTX, s.windowSizeRX)


def test_missing_ua_parameter_means_the_default():
    # IEC 62056-46: a parameter the UA leaves out takes its default value.
    # Gurux keeps its own proposal instead; we follow the standard.
    ua = srv(UA | PF, hdlc.snrm_info(154, 154))  # windows left out: 1
    link = Link(SERVER, 16, window_tx=7, window_rx=7)
    link.connect(0)
    link.receive_data(ua)
    assert (link.window_tx, link.window_rx) == (1, 1)
    c = gx_client(windowSizeTX=7, windowSizeRX=7)
    c.snrmRequest()
    c.parseUAResponse(GXByteBuffer(Frame.from_bytes(ua).info))
    assert (c.hdlcSettings.windowSizeTX, c.hdlcSettings.windowSizeRX) == (7, 7)


def test_request_response_session_matches_gurux():
    # AARQ, segmented AARE, GET, GET, DISC: every frame the client sends is
    # gurux's byte for byte; every frame the server sends (our encoder) is
    # accepted by gurux's client, sequence checks included
    c = gx_client()
    link = Link(SERVER, 16)
    assert link.connect(0) == bytes(c.snrmRequest())
    ua = srv(UA | PF, hdlc.snrm_info(154, 154))
    c.parseUAResponse(GXByteBuffer(Frame.from_bytes(ua).info))
    link.receive_data(ua)
    assert type(events(link)[0]).__name__ == "Connected"

    def exchange(gx_frames, responses):
        gx_frames = [bytes(f) for f in gx_frames]
        assert len(gx_frames) == 1
        ours = link.send(Frame.from_bytes(gx_frames[0]).info, 0)
        assert ours == gx_frames
        reply = GXReplyData()
        for resp in responses:
            assert c.getData(GXByteBuffer(resp), reply, None)
            out = link.receive_data(resp)
            if reply.isMoreData():
                assert out == [bytes(c.receiverReady(reply))]
            else:
                assert out == []
        evs = events(link)
        # gurux keeps the AARE whole, of a GET response only the data
        assert len(evs) == 1 and evs[0].info.endswith(bytes(reply.data.array()))
        return reply

    aare = b"\xe6\xe7\x00" + AARE_APDU
    reply = exchange(c.aarqRequest(), [srv(0x10 | 1 << 5, aare[:20], True),
                                       srv(0x12 | 1 << 5, aare[20:])])
    c.parseAareResponse(reply.data)
    reg = GXDLMSRegister("1.0.1.8.0.255")
    get_resp = b"\xe6\xe7\x00" + bytes.fromhex("c401c100060000303a")
    exchange(c.read(reg, 2), [srv(0x14 | 2 << 5, get_resp)])
    clock = GXDLMSClock("0.0.1.0.0.255")
    dt = bytes.fromhex("c401c100090c07e8011b06173b2d00ff8880")
    exchange(c.read(clock, 2), [srv(0x16 | 3 << 5, b"\xe6\xe7\x00" + dt)])
    assert link.disconnect(0) == bytes(c.disconnectRequest(True))


def test_gurux_segmented_requests_decode_and_reencode():
    # gurux cuts long requests at maxInfoTX - 3 in the first frame: each of
    # its frames decodes here and re-encodes to the same bytes
    c = gx_client(maxInfoTX=32)
    c.snrmRequest()
    frames = [bytes(f) for f in c.aarqRequest()]
    assert len(frames) == 2
    fr = Framer()
    got = fr.feed(b"".join(frames))
    assert len(got) == 2 and all(isinstance(f, Frame) for f in got)
    assert [f.segmented for f in got] == [True, False]
    assert [(f.ns, f.nr, f.pf) for f in got] == [(0, 0, True), (1, 0, True)]
    assert [f.to_bytes() for f in got] == frames


def test_our_segmented_response_reassembled_by_gurux():
    # a GET response carrying a 2048-byte octet string, in 1024-byte frames
    payload = b"\xe6\xe7\x00" + bytes.fromhex("c401c10009820800") + bytes(range(256)) * 8
    link = Link(SERVER, 16, max_info_rx=1024, max_data_len=4096)
    c = gx_client(maxInfoRX=1024)
    link.connect(0)
    ua = srv(UA | PF, hdlc.snrm_info(1024, 128))
    link.receive_data(ua)
    c.snrmRequest()
    c.parseUAResponse(GXByteBuffer(Frame.from_bytes(ua).info))
    events(link)
    req = c.read(GXDLMSRegister("1.0.1.8.0.255"), 2)[0]
    link.send(Frame.from_bytes(bytes(req)).info, 0)
    reply = GXReplyData()
    ns = 0
    for i in range(0, len(payload), 1024):
        f = srv(0x10 | ns << 1 | 1 << 5, payload[i:i + 1024], i + 1024 < len(payload))
        c.getData(GXByteBuffer(f), reply, None)
        out = link.receive_data(f)
        if reply.isMoreData():
            assert out == [bytes(c.receiverReady(reply))]
        ns += 1
    evs = events(link)
    assert evs[0].info == payload
    assert bytes(reply.data.array()).endswith(bytes(range(256)) * 8)


# ---- dlms-cosem --------------------------------------------------------------


DC_SERVER = HdlcAddress(1, 17, "server")
DC_CLIENT = HdlcAddress(16, None, "client")


def test_dlms_cosem_snrm_disc_rr():
    link = Link(SERVER, 16)
    assert link.connect(0) == dc_frames.SetNormalResponseModeFrame(DC_SERVER, DC_CLIENT).to_bytes()
    assert link.disconnect(0) == dc_frames.DisconnectFrame(DC_SERVER, DC_CLIENT).to_bytes()
    for n in range(8):
        rr = dc_frames.ReceiveReadyFrame(DC_SERVER, DC_CLIENT, receive_sequence_number=n).to_bytes()
        assert rr == hdlc.encode(SERVER, CLIENT, RR | PF | n << 5)


def test_dlms_cosem_parses_our_ua():
    ua = srv(UA | PF, hdlc.snrm_info(1024, 512, 1, 1))
    f = dc_frames.UnNumberedAcknowledgmentFrame.from_bytes(ua)
    assert f.payload == Frame.from_bytes(ua).info
    assert f.to_bytes() == ua


info_bytes = st.binary(min_size=1, max_size=400) | st.lists(
    st.sampled_from([0x7E, 0x7D, 0xA0, 0xA8, 0x21, 0x03, 0x00]), min_size=1, max_size=400).map(bytes)


@given(info=info_bytes, ns=st.integers(0, 7), nr=st.integers(0, 7), seg=st.booleans(),
       final=st.booleans(), to_client=st.booleans())
def test_i_frames_agree_with_dlms_cosem(info, ns, nr, seg, final, to_client):
    dest, src = (DC_CLIENT, DC_SERVER) if to_client else (DC_SERVER, DC_CLIENT)
    theirs = dc_frames.InformationFrame(dest, src, info, send_sequence_number=ns,
                                        receive_sequence_number=nr, segmented=seg,
                                        final=final).to_bytes()
    control = ns << 1 | nr << 5 | (PF if final else 0)
    ours = hdlc.encode(CLIENT if to_client else SERVER, SERVER if to_client else CLIENT, control,
                       info, seg)
    assert ours == theirs
    if to_client:  # dlms-cosem parses frames to the client only
        back = dc_frames.InformationFrame.from_bytes(ours)
        assert (back.payload, back.send_sequence_number, back.receive_sequence_number,
                back.segmented, back.final) == (info, ns, nr, seg, final)
    f = Framer().feed(ours)[0]
    assert (f.info, f.ns, f.nr, f.segmented, f.pf) == (info, ns, nr, seg, final)


def test_payload_flag_byte_is_no_stall():
    # PEERS.md: dlms-cosem's HDLC reader stalls on a payload byte 0x7e. Our
    # framer takes the frame from one feed; dlms-cosem's parser agrees on it.
    frame = srv(0x30, b"\xe6\xe7\x00\x7e\x7e\xa0\x07")
    got = Framer().feed(frame)
    assert len(got) == 1 and got[0].info == b"\xe6\xe7\x00\x7e\x7e\xa0\x07"
    assert dc_frames.InformationFrame.from_bytes(frame).payload == got[0].info


# ---- hypothesis fuzz -----------------------------------------------------------


def split(data, cuts):
    cuts = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for c in cuts + [len(data)]:
        out.append(data[last:c])
        last = c
    return out


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=20),
       max_len=st.integers(7, 2047))
def test_framer_feed_never_raises(data, cuts, max_len):
    fr = Framer(max_len)
    cap = len(fr._buf)
    for part in split(data, cuts):
        for item in fr.feed(part):
            assert isinstance(item, (Frame, FrameError))
            if isinstance(item, Frame):
                assert Frame.from_bytes(item.to_bytes()) == item
        assert fr._n <= cap
    for item in fr.flush():
        assert isinstance(item, FrameError)


addresses = st.sampled_from([CLIENT, SERVER, hdlc.server_address(1), hdlc.server_address(1, 0x3FFF),
                             hdlc.server_address(0x3FFF, 0x2AAA)])
frames_st = st.builds(lambda d, s, c, i, g: Frame(d, s, c, i, g), addresses, addresses,
                      st.integers(0, 255), st.binary(max_size=300) | info_bytes, st.booleans())
junk_st = st.binary(max_size=40).map(lambda b: b.replace(b"\x7e", b""))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.tuples(junk_st, frames_st), min_size=1, max_size=8),
       cuts=st.lists(st.integers(0, 5000), max_size=30), shared_flags=st.booleans())
def test_framer_recovers_every_frame(items, cuts, shared_flags):
    stream = b""
    for junk, f in items:
        b = f.to_bytes()
        if shared_flags and stream.endswith(b"\x7e") and not junk:
            b = b[1:]  # one flag between frames
        stream += junk + b
    fr = Framer()
    got = []
    for part in split(stream, cuts):
        got += fr.feed(part)
    assert [g for g in got if isinstance(g, Frame)] == [f for _, f in items]
    # junk right after a flag may look like a header (7e a0 ..): it costs an
    # error report, never a frame


@settings(max_examples=300, deadline=None)
@given(f=frames_st, bit=st.integers(0, 20000), cuts=st.lists(st.integers(0, 1000), max_size=5))
def test_framer_resynchronises_after_a_bit_error(f, bit, cuts):
    bad = bytearray(f.to_bytes())
    bit %= len(bad) * 8
    bad[bit // 8] ^= 1 << (bit % 8)
    good = Frame(SERVER, CLIENT, 0x10, b"after")
    fr = Framer()
    got = []
    for part in split(bytes(bad) + good.to_bytes(), cuts):
        got += fr.feed(part)
    assert [g for g in got if isinstance(g, Frame)] == [good]
    assert isinstance(got[-1], Frame)


server_frames = st.builds(
    lambda c, i, g, addr: hdlc.encode(CLIENT, addr, c, i, g),
    st.integers(0, 255), st.binary(max_size=200), st.booleans(),
    st.sampled_from([SERVER, hdlc.server_address(1, 18)]))


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.one_of(
    st.tuples(st.just("rx"), server_frames),
    st.tuples(st.just("junk"), st.binary(max_size=50)),
    st.tuples(st.just("tick"), st.integers(0, 5000)),
    st.tuples(st.just("send"), st.binary(min_size=1, max_size=600)),
    st.tuples(st.just("connect"), st.none()),
    st.tuples(st.just("disconnect"), st.none())), max_size=40))
def test_link_never_raises(steps):
    link = Link(SERVER, 16, max_info_rx=256, response_timeout_ms=1000, retries=2, max_data_len=1000)
    now = 0
    link.connect(now)
    link.receive_data(srv(UA | PF, hdlc.snrm_info(256, 64, 1, 3)))
    for kind, arg in steps:
        if kind == "rx" or kind == "junk":
            out = link.receive_data(arg, now)
        elif kind == "tick":
            now += arg
            out = link.tick(now)
        elif kind == "send":
            if not link.connected or link.busy:
                with pytest.raises(hdlc.LinkStateError):
                    link.send(arg, now)
                continue
            out = link.send(arg, now)
        elif kind == "connect":
            out = [link.connect(now)]
        else:
            out = [link.disconnect(now)]
        for b in out:
            Frame.from_bytes(b)  # everything the link writes is a good frame
        assert len(link._events) <= 32
        for e in events(link):
            assert type(e).__name__ in ("Connected", "Data", "Disconnected", "Error")
