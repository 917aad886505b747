# lib/dlms/client.py: conversations against the scripted meter of
# dlms_fake_meter.py (APDU level), and the HDLC / wrapper transports against
# frames laid out here with dlms.hdlc.encode and dlms.wrapper.encode.
# tests/host/test_dlms_client_interop.py runs the same client against the
# gurux-dlms simulator.
import sys

from dlms_fake_meter import (BIG, CLIENT_TITLE, CLOCK, DEMAND, EK, AK, ENERGY, METHOD,
                             PASSWORD, PROFILE, VOLTAGE, FakeMeter, row)
from fuzzing import Xorshift32, iterations, mutate_apdu
from mpcompat import raises

from dlms import acse, apdu, axdr, cosem, hdlc, wrapper
from dlms.acse import AssociationError
from dlms.apdu import AccessError, ApduError, BlockTransferError, DlmsError, ServiceException
from dlms.client import CipheringError, Client, HdlcTransport, TransportError, WrapperTransport, run
from dlms.security import SecurityContext

MP = sys.implementation.name == "micropython"


def h(s):
    return bytes.fromhex(s)


def session(meter=None, **kw):
    meter = meter or FakeMeter(kw.pop("meter_mechanism", kw.get("mechanism", 0)))
    c = Client(**kw)
    run(c.associate(), meter.exchange)
    return meter, c


def sec(ic=1, **kw):
    return SecurityContext(CLIENT_TITLE, EK, AK, ic, **kw)


def counter():
    # a deterministic challenge source
    state = [0]

    def rng(n):
        state[0] += 1
        return bytes(((state[0] + i) & 0xFF for i in range(n)))

    return rng


# ---- association ----


def test_public_association_and_register_read():
    m, c = session()
    assert c.associated and c.negotiated == acse.DEFAULT_CONFORMANCE and c.server_max_pdu == 1024
    assert run(c.read_register(ENERGY[1]), m.exchange) == (10020575, 30)
    v = run(c.read_register(VOLTAGE[1]), m.exchange)
    assert abs(v[0] - 229.6) < 1e-9 and v[1] == 35, v  # V
    assert run(c.read_register("1-0:32.7.0", exp=-3), m.exchange) == (229600, 35)
    gets = m.gets
    run(c.read_register("1-0:32.7.0*255"), m.exchange)
    assert m.gets == gets + 1, "scaler_unit is read once per object"
    assert run(c.read_register(DEMAND[1], cosem.DEMAND_REGISTER), m.exchange) == (3000, 27)


def test_lls_association_and_release():
    m = FakeMeter(acse.MECH_LLS)
    c = Client(acse.MECH_LLS, PASSWORD)
    ir = run(c.associate(), m.exchange)
    assert ir.max_pdu == 1024 and ir.vaa_name == 0x0007, ir  # the LN referencing VAA
    assert run(c.release(), m.exchange) == 0
    assert not c.associated
    run(Client(acse.MECH_LLS, "12345678").associate(), m.exchange)  # a str password
    e = raises(AssociationError, run, c.get(CLOCK[1], 8, 2), m.exchange)
    assert e.reason == "not_associated"


def test_rejections_name_result_and_diagnostic():
    m = FakeMeter(acse.MECH_LLS)
    e = raises(AssociationError, run, Client(acse.MECH_LLS, b"wrong").associate(), m.exchange)
    assert (e.reason, e.result_name, e.diagnostic_name) == (
        "rejected", "rejected-permanent", "authentication-failure"), str(e)
    e = raises(AssociationError, run, Client().associate(), m.exchange)
    assert e.diagnostic_name == "authentication-mechanism-name-not-recognised", str(e)
    m.aare_result = (2, 1)
    e = raises(AssociationError, run, Client(acse.MECH_LLS, PASSWORD).associate(), m.exchange)
    assert e.result_name == "rejected-transient" and e.diagnostic_name == "no-reason-given"


def test_aare_with_another_application_context():
    conv = Client().associate()
    conv.send(None)
    # an AARE accepting the ciphered context when the plain one was proposed
    e = raises(AssociationError, conv.send, h("6129A109060760857405080103A203020100A305A103020100BE10040E"
                                              "0800065F1F040000501F01F40007"))
    assert e.reason == "protocol" and "context 3" in str(e), str(e)


def test_initiate_error_in_an_accepted_aare():
    m = FakeMeter()
    m.initiate_error = h("0e010603")
    e = raises(AssociationError, run, Client().associate(), m.exchange)
    assert e.reason == "initiate" and e.initiate_error.error_name == "pdu-size-too-short", str(e)


def test_hls_gmac_ciphered_association():
    for ciphering in (0, 1):  # service-specific glo-, general-glo-ciphering
        m = FakeMeter(acse.MECH_HLS_GMAC, ciphered=True, rows=60)
        s = sec()
        c = Client(acse.MECH_HLS_GMAC, security=s, ciphering=ciphering, rng=counter())
        run(c.associate(), m.exchange)
        assert c.associated and c.server_title == b"FAKE0001"
        assert run(c.read_register(ENERGY[1]), m.exchange) == (10020575, 30)
        assert s.peer_counter(b"FAKE0001") == m.sec.invocation_counter - 1
        rows = run(c.read_profile(PROFILE[1], axdr.DateTime(2025, 1, 1), axdr.DateTime(2025, 1, 2)),
                   m.exchange)
        assert len(rows) == 60 and rows[59] == axdr.decode(row(59))[0], len(rows)
        assert run(c.release(), m.exchange) == 0
        assert s.invocation_counter > 10


def test_hls_gmac_general_ded_with_a_dedicated_key():
    m = FakeMeter(acse.MECH_HLS_GMAC, ciphered=True)
    s = sec()
    s.dedicated_key = bytes(range(0x40, 0x50))
    c = Client(acse.MECH_HLS_GMAC, security=s, rng=counter())
    sent = []

    def ex(req):
        sent.append(bytes(req)[0])
        return m.exchange(req)

    run(c.associate(), ex)
    assert m.dedicated_key == s.dedicated_key
    assert run(c.get(CLOCK[1], 8, 2), ex) == axdr.DateTime(2025, 6, 21, 12, 0, 7, 0, -120, 0x80).to_octets()
    assert sent == [0x60, 0xDC, 0xDC], ["%02x" % t for t in sent]


def test_hls_meter_with_a_wrong_answer_is_refused():
    m = FakeMeter(acse.MECH_HLS_GMAC, ciphered=True)
    m.bad_f_ctos = True
    e = raises(AssociationError, run, Client(acse.MECH_HLS_GMAC, security=sec()).associate(), m.exchange)
    assert e.reason == "authentication", str(e)
    m = FakeMeter(acse.MECH_HLS_GMAC, ciphered=True)
    wrong = SecurityContext(CLIENT_TITLE, EK, bytes(16), 1)
    e = raises(AssociationError, run, Client(acse.MECH_HLS_GMAC, security=wrong).associate(), m.exchange)
    assert e.reason == "rejected", str(e)


def test_hls_without_ciphered_apdus():
    m = FakeMeter(acse.MECH_HLS_GMAC)
    c = Client(acse.MECH_HLS_GMAC, security=sec(), cipher_apdus=False)
    run(c.associate(), m.exchange)
    assert c.associated and not c.ciphered
    assert run(c.get(ENERGY[1], 3, 2), m.exchange) == 10020575


def test_hls_gmac_needs_keys():
    raises(DlmsError, Client, acse.MECH_HLS_GMAC)


# ---- ciphering policy ----


def ciphered_session(**knobs):
    m = FakeMeter(acse.MECH_HLS_GMAC, ciphered=True)
    s = sec()
    c = Client(acse.MECH_HLS_GMAC, security=s, rng=counter())
    run(c.associate(), m.exchange)
    for k in knobs:
        setattr(m, k, knobs[k])
    return m, c, s


def test_replayed_response_counter_is_refused():
    m, c, s = ciphered_session(replay=True)
    run(c.get(ENERGY[1], 3, 2), m.exchange)
    e = raises(CipheringError, run, c.get(ENERGY[1], 3, 2), m.exchange)
    assert e.reason == "replay" and "not above" in str(e), str(e)


def test_wrong_gcm_tag_is_refused():
    m, c, s = ciphered_session(break_tag=True)
    e = raises(CipheringError, run, c.get(ENERGY[1], 3, 2), m.exchange)
    assert e.reason == "authentication", str(e)


def test_plain_answer_in_a_ciphered_association_is_refused():
    m, c, s = ciphered_session(plain_answers=True)
    e = raises(CipheringError, run, c.get(ENERGY[1], 3, 2), m.exchange)
    assert e.reason == "policy", str(e)
    m.plain_answers = False
    m.exception = h("d80105")  # exception-responses are never ciphered
    e = raises(ServiceException, run, c.get(ENERGY[1], 3, 2), m.exchange)
    assert e.service_name == "deciphering-error"


def test_ciphered_answer_outside_a_ciphered_association_is_refused():
    m, c = session()
    m.exception = h("cc0530000000ff")
    e = raises(CipheringError, run, c.get(ENERGY[1], 3, 2), m.exchange)
    assert e.reason == "policy"


# ---- GET ----


def test_get_errors_and_exception_response():
    m, c = session()
    m.denied.add(ENERGY + (2,))
    e = raises(AccessError, run, c.get(ENERGY[1], 3, 2), m.exchange)
    assert (e.result, e.name) == (3, "read-write-denied") and "1-0:1.8.0*255/2" in str(e), str(e)
    e = raises(AccessError, run, c.get("1-0:99.99.0", 3, 2), m.exchange)
    assert e.name == "object-undefined"
    m.exception = h("d8010600000065")
    e = raises(ServiceException, run, c.get(CLOCK[1], 8, 2), m.exchange)
    assert e.service_name == "invocation-counter-error" and e.invocation_counter == 0x65
    m.wrong_invoke = True
    e = raises(ApduError, run, c.get(CLOCK[1], 8, 2), m.exchange)
    assert e.reason == "unexpected" and "invoke" in str(e), str(e)


def test_get_with_block_transfer():
    m, c = session()
    v = run(c.get(BIG[1], 1, 2), m.exchange)
    assert v == bytes(range(200)) * 3, len(v)
    c.max_get_size = 300
    e = raises(BlockTransferError, run, c.get(BIG[1], 1, 2), m.exchange)
    assert "300" in str(e)
    m2 = FakeMeter(first_block=7)  # block numbers count on from where the meter starts
    c2 = Client()
    run(c2.associate(), m2.exchange)
    assert len(run(c2.get(BIG[1], 1, 2), m2.exchange)) == 600


def test_out_of_order_block_is_an_error():
    m, c = session()
    m.skip_block = True
    e = raises(BlockTransferError, run, c.get(BIG[1], 1, 2), m.exchange)
    assert "expected" in str(e), str(e)


def test_data_access_result_in_a_block():
    m, c = session()
    conv = c.get(BIG[1], 1, 2)
    conv.send(None)
    conv.send(m.exchange(apdu.get_request(1, BIG[1], 2)))
    e = raises(AccessError, conv.send, h("c402c101000000020113"))
    assert e.name == "data-block-number-invalid", str(e)
    conv = c.get(BIG[1], 1, 2)
    conv.send(None)
    conv.send(m.exchange(apdu.get_request(1, BIG[1], 2)))
    e = raises(AccessError, conv.send, h("c401c1010f"))  # a normal answer, mid-transfer
    assert e.name == "long-get-aborted", str(e)


def test_get_stream_rows_as_they_arrive():
    m, c = session()
    seen = []
    blocks = []

    def on_row(r):
        seen.append((len(seen), m._long is not None))

    def ex(req):
        blocks.append(req)
        return m.exchange(req)

    n = run(c.get_stream(PROFILE[1], 7, 2, on_row), ex)
    assert n == 1000 and len(seen) == 1000
    assert len(blocks) == 131, len(blocks)  # 26,003 octets in blocks of 200
    assert seen[500][1], "rows came out while blocks were still to come"


def test_get_stream_memory_stays_bounded():
    # 1,000 rows (26 KB) in 1 KB blocks: the heap in use never grows by more
    # than a few blocks' worth (rows are handed on, not kept)
    m = FakeMeter(block_size=1000)
    c = Client()
    run(c.associate(), m.exchange)
    if MP:
        import gc

        gc.collect()
        base = gc.mem_alloc()
        peak = [0]

        def on_row(r):
            if r[1] % 50 == 0:
                gc.collect()
                peak[0] = max(peak[0], gc.mem_alloc() - base)

        run(c.get_stream(PROFILE[1], 7, 2, on_row), m.exchange)
        word = 8 if sys.maxsize > 0xFFFFFFFF else 4
        assert peak[0] * 4 // word < 6000, peak[0]
    else:
        import tracemalloc

        tracemalloc.start()
        try:
            n = run(c.get_stream(PROFILE[1], 7, 2, lambda r: None), m.exchange)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert n == 1000 and peak < 40000, peak  # the decoded buffer alone would be ~300 KB


def test_get_stream_errors():
    m, c = session()
    m.denied.add(PROFILE + (2,))
    e = raises(AccessError, run, c.get_stream(PROFILE[1], 7, 2, lambda r: None), m.exchange)
    assert e.name == "read-write-denied"
    e = raises(ApduError, run, c.get_stream(CLOCK[1], 8, 2, lambda r: None), m.exchange)
    assert e.reason == "bad_data", str(e)  # not an array
    m2 = FakeMeter(rows=3)
    c2 = Client()
    run(c2.associate(), m2.exchange)
    rows = []
    assert run(c2.get_stream(PROFILE[1], 7, 2, rows.append), m2.exchange) == 3
    assert rows[2] == axdr.decode(row(2))[0]
    # a meter that ends the array early
    conv = c2.get_stream(PROFILE[1], 7, 2, rows.append)
    conv.send(None)
    e = raises(BlockTransferError, conv.send, h("c401c1000103") + row(0) + row(1))
    c2.max_stream_size = 50
    e = raises(BlockTransferError, run, c2.get_stream(PROFILE[1], 7, 2, rows.append), m2.exchange)


def test_get_with_list():
    m, c = session()
    got = run(c.get_with_list([(ENERGY[1], 3, 2), ("1-0:99.99.0", 3, 2), (VOLTAGE[1], 3, 3)]), m.exchange)
    assert got[0] == 10020575 and got[2] == [-1, 35], got
    assert isinstance(got[1], AccessError) and got[1].name == "object-undefined", got
    # a long list answer comes in blocks
    m.block_size = 20
    got = run(c.get_with_list([(ENERGY[1], 3, 2), (CLOCK[1], 8, 2), (VOLTAGE[1], 3, 2)]), m.exchange)
    assert got[0] == 10020575 and got[2] == 2296 and len(got[1]) == 12, got
    # more items than one request takes: split in parts
    got = run(c.get_with_list([(ENERGY[1], 3, 2)] * 5, 2), m.exchange)
    assert got == [10020575] * 5


def test_get_with_list_without_multiple_references():
    m = FakeMeter(conformance=acse.DEFAULT_CONFORMANCE & ~acse.CONF_MULTIPLE_REFERENCES)
    c = Client()
    run(c.associate(), m.exchange)
    gets = m.gets
    got = run(c.get_with_list([(ENERGY[1], 3, 2), ("1-0:99.99.0", 3, 2)]), m.exchange)
    assert got[0] == 10020575 and isinstance(got[1], AccessError) and m.gets == gets + 2, got


# ---- SET, ACTION, clock, profile ----


def test_set_and_clock():
    m, c = session()
    dt = axdr.DateTime(2025, 6, 21, 12, 30, 0, 0, -120, 0x80)
    run(c.set_clock(dt), m.exchange)
    assert m.sets[-1] == CLOCK + (b"\x09\x0c" + dt.to_octets(),), m.sets
    run(c.set(ENERGY[1], 3, 2, (axdr.DOUBLE_LONG_UNSIGNED, 5)), m.exchange)
    assert m.sets[-1][3] == h("0600000005")
    assert run(c.read_clock(), m.exchange) == axdr.DateTime(2025, 6, 21, 12, 0, 7, 0, -120, 0x80)
    m.denied.add(CLOCK)
    e = raises(AccessError, run, c.set_clock(dt), m.exchange)
    assert e.name == "read-write-denied"
    raises(DlmsError, run, c.set(ENERGY[1], 3, 2, (17, 300)), m.exchange)  # unsigned


def test_set_with_block_transfer():
    m = FakeMeter(max_pdu=64, conformance=acse.DEFAULT_CONFORMANCE | acse.CONF_BLOCK_SET)
    c = Client()
    run(c.associate(), m.exchange)
    value = bytes(range(150))
    sent = []

    def ex(req):
        sent.append(bytes(req[:2]))
        return m.exchange(req)

    run(c.set(BIG[1], 1, 2, (axdr.OCTET_STRING, value)), ex)
    assert m.sets[-1] == BIG + (2, axdr.encode(axdr.OCTET_STRING, value)), m.sets[-1]
    assert sent[0] == h("c102") and sent[-1] == h("c103") and len(sent) == 5, sent
    # without block-transfer-with-set the request goes whole
    m2 = FakeMeter(max_pdu=64)
    c2 = Client()
    run(c2.associate(), m2.exchange)
    run(c2.set(BIG[1], 1, 2, (axdr.OCTET_STRING, value)), m2.exchange)
    assert len(m2.sets[-1][3]) == 153  # 09 81 96 + 150 octets


def test_action():
    m, c = session()
    assert run(c.action(METHOD[1], METHOD[0], 1, (axdr.LONG_UNSIGNED, 7)), m.exchange) == 42
    e = raises(AccessError, run, c.action(METHOD[1], METHOD[0], 2), m.exchange)
    assert e.name == "object-unavailable"
    e = raises(AccessError, run, c.action("0-0:96.3.10", 70, 1, (axdr.INTEGER, 0)), m.exchange)
    assert e.name == "read-write-denied"


def test_read_profile_by_range_and_capture_objects():
    m, c = session()
    t0 = axdr.DateTime(2025, 6, 15, 0, 0, 0, 0, 0, 0)
    rows = []
    n = run(c.read_profile(PROFILE[1], t0, t0, rows.append, [(8, CLOCK[1], 2, 0)]), m.exchange)
    assert n == 1000 and len(rows) == 1000
    m.values[PROFILE + (3,)] = axdr.encode(axdr.ARRAY, [cosem.capture_object(8, CLOCK[1], 2),
                                                        cosem.capture_object(3, ENERGY[1], 2)])
    cols = run(c.read_capture_objects(PROFILE[1]), m.exchange)
    assert [(k, str(o), a) for k, o, a, _ in cols] == [(8, "0-0:1.0.0*255", 2), (3, "1-0:1.8.0*255", 2)]


def test_bad_cosem_values_raise_apdu_error():
    m, c = session()
    m.values[CLOCK] = h("0600000001")
    e = raises(ApduError, run, c.read_clock(), m.exchange)
    assert e.reason == "bad_data"
    m.values[ENERGY + (3,)] = h("0600000001")
    raises(ApduError, run, c.read_register(ENERGY[1]), m.exchange)


# ---- transports ----

SERVER = hdlc.server_address(1, 0x10)
ME = hdlc.client_address(0x10)
# HDLC control field values (IEC 62056-46); dlms.hdlc's are const().
HDLC_I, HDLC_RR, HDLC_UI, HDLC_SNRM, HDLC_DISC, HDLC_UA, HDLC_DM = 0x00, 0x01, 0x03, 0x83, 0x43, 0x63, 0x0F
HDLC_PF = 0x10


def server_frame(control, info=b"", segmented=False):
    return hdlc.encode(ME, SERVER, control, info, segmented)


def opened(max_apdu=1024, **kw):
    t = HdlcTransport(hdlc.Link(SERVER, 0x10, **kw), max_apdu)
    out = t.open(0)
    assert hdlc.Frame.from_bytes(out[0]).kind == HDLC_SNRM
    assert not t.ready()
    t.receive_data(server_frame(HDLC_UA | HDLC_PF, hdlc.snrm_info(128, 128, 1, 1)), 0)
    assert t.ready() and t.response() is None
    return t


def test_hdlc_transport_request_and_response():
    t = opened()
    out = t.send(h("c001c100080000010000ff0200"), 0)
    f = hdlc.Frame.from_bytes(out[0])
    assert f.kind == HDLC_I and f.info == h("e6e600c001c100080000010000ff0200"), f
    apdu_bytes = h("c401c100090c07e90615ff0c000700ff8880")
    t.receive_data(server_frame(0x30, h("e6e700") + apdu_bytes), 10)
    assert t.ready() and bytes(t.response()) == apdu_bytes


def test_hdlc_transport_gathers_segments():
    t = opened()
    t.send(h("c001c100070100630100ff0200"), 0)
    body = h("e6e700c401c100") + axdr.encode(axdr.OCTET_STRING, bytes(range(200)))
    rr = t.receive_data(server_frame(0x30, body[:128], True), 1)
    assert len(rr) == 1 and hdlc.Frame.from_bytes(rr[0]).kind == HDLC_RR and not t.ready()
    t.receive_data(server_frame(0x32, body[128:]), 2)
    assert t.ready() and bytes(t.response()) == body[3:]
    assert t.stray == 0 and t.errors == 0


def test_hdlc_transport_failures():
    t = opened(max_apdu=100)
    t.send(b"\xc0\x01", 0)
    t.receive_data(server_frame(0x30, h("e6e700") + bytes(120)), 1)
    e = raises(TransportError, t.response)
    assert e.reason == "too_long"
    t.send(b"\xc0\x01", 0)
    t.receive_data(server_frame(0x52, h("e6e600c4")), 1)
    e = raises(TransportError, t.response)
    assert e.reason == "llc", str(e)
    t.send(b"\xc0\x01", 0)
    t.receive_data(server_frame(HDLC_UI, h("e6e7000f00")), 1)  # a push in between
    assert t.stray == 1 and not t.ready()
    t.receive_data(server_frame(HDLC_DM | HDLC_PF), 1)
    e = raises(TransportError, t.response)
    assert (e.reason, e.detail) == ("disconnected", "dm"), str(e)
    e = raises(TransportError, run, Client().associate(), lambda req: _send_fail(t, req))
    assert e.reason == "state"


def _send_fail(t, req):
    t.send(req, 0)
    return t.response()


def test_hdlc_transport_no_response_and_close():
    t = opened(response_timeout_ms=100, retries=1)
    t.send(b"\xc0\x01", 0)
    again = t.tick(50) + t.tick(150)
    assert len(again) == 1 and not t.ready(), again  # one retransmission
    t.tick(300)
    e = raises(TransportError, t.response)
    assert e.reason == "no_response", str(e)
    t = opened()
    out = t.close(0)
    assert hdlc.Frame.from_bytes(out[0]).kind == HDLC_DISC and not t.ready()
    t.receive_data(server_frame(HDLC_UA | HDLC_PF), 1)
    assert t.ready() and t.response() is None


def test_hdlc_transport_drives_a_whole_session():
    # the fake meter behind HDLC frames: association, a block-transfer GET
    m = FakeMeter()
    t = opened(max_apdu=256, max_info_rx=64)
    vs = [0]

    def ex(req):
        out = t.send(req, 0)
        f = hdlc.Frame.from_bytes(out[0])
        resp = h("e6e700") + m.exchange(f.info[3:])
        k = 0
        while True:
            seg = resp[k:k + 64]
            k += 64
            more = k < len(resp)
            ns = vs[0]
            vs[0] = (ns + 1) & 7
            nr = (f.ns + 1) & 7
            rr = t.receive_data(server_frame((nr << 5) | (ns << 1) | HDLC_PF, seg, more), 0)
            if not more:
                return t.response()
            assert len(rr) == 1, rr

    c = Client(max_pdu=256)
    run(c.associate(), ex)
    assert run(c.get(BIG[1], 1, 2), ex) == bytes(range(200)) * 3


def test_wrapper_transport():
    t = WrapperTransport(0x10, 1, response_timeout_ms=1000)
    assert t.open(0) == [] and t.ready() and t.response() is None
    out = t.send(h("c001c100080000010000ff0200"), 0)
    assert out == [wrapper.encode(0x10, 1, h("c001c100080000010000ff0200"))]
    reply = wrapper.encode(1, 0x10, h("c401c1000600001391"))
    assert t.receive_data(reply[:5], 1) == [] and not t.ready()
    t.receive_data(reply[5:], 2)
    assert t.ready() and t.response() == h("c401c1000600001391")
    t.send(b"\xc0", 0)
    t.tick(10)
    t.tick(500)
    assert not t.ready()
    t.tick(1001)
    e = raises(TransportError, t.response)
    assert e.reason == "timeout"
    t.send(b"\xc0", 0)
    t.receive_data(h("0002000100100001c4"), 1)
    e = raises(TransportError, t.response)
    assert e.reason == "wrapper"
    t.receive_data(wrapper.encode(1, 0x10, b"\xc4"), 1)  # nobody waits for it
    assert t.stray == 1 and t.close(0) == []


# ---- fuzz ----


def test_client_conversation_fuzz():
    # every answer of a recorded conversation mutated in turn: the client
    # raises a DlmsError subclass or copes, never anything else
    m = FakeMeter(acse.MECH_LLS, block_size=60, rows=6)
    script = []

    def rec(req):
        r = m.exchange(req)
        script.append(r)
        return r

    c = Client(acse.MECH_LLS, PASSWORD)

    def conversation(c):
        yield from c.associate()
        yield from c.read_register(ENERGY[1])
        yield from c.get_with_list([(ENERGY[1], 3, 2), (VOLTAGE[1], 3, 3)])
        yield from c.get_stream(PROFILE[1], 7, 2, lambda r: None)
        yield from c.get(BIG[1], 1, 2)
        yield from c.set_clock(axdr.DateTime(2025, 1, 1, 0, 0, 0))
        yield from c.action(METHOD[1], METHOD[0], 1)
        yield from c.release()

    run(conversation(c), rec)
    rng = Xorshift32(0x1B873593)
    n = iterations(300)
    outcomes = {}
    for i in range(n):
        k = i % len(script)
        bad = mutate_apdu(rng, script[k])
        answers = script[:k] + [bad] + script[k + 1:]
        pos = [0]

        def replay(req):
            j = pos[0]
            pos[0] += 1
            if j >= len(answers):
                raise TransportError("timeout")
            return answers[j]

        try:
            run(conversation(Client(acse.MECH_LLS, PASSWORD)), replay)
            name = "ok"
        except DlmsError as e:
            name = type(e).__name__
        outcomes[name] = outcomes.get(name, 0) + 1
        rng.next()  # one number skipped between conversations
    assert len(outcomes) >= 3, outcomes
