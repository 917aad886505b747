# DLMS push: Data-Notification decoding and the streaming receiver (lib/dlms/push.py).
from fuzzing import Xorshift32, iterations
from mpcompat import raises
from push_vectors import (AIDON_FRAME, KAMSTRUP_AK, KAMSTRUP_APDU_AT, KAMSTRUP_APDU_END, KAMSTRUP_DATE_TIME, KAMSTRUP_EK,
                          KAMSTRUP_FRAME, KAMSTRUP_IC, KAMSTRUP_SYSTEM_TITLE, NOE_DATE_TIME, NOE_FRAME1_LEN,
                          NOE_FRAMES, NOE_INVOKE_ID, NOE_KEY, h)

import aesgcm
import mbus
from dlms import hdlc, push, security, wrapper
from dlms.push import DataNotification, PushError, PushReceiver
from dlms.security import InvocationCounterError, SecurityContext, SecurityError


def noe_context(**kw):
    # the Netz NOE customer interface only encrypts (SC 0x20): allowed explicitly
    return SecurityContext(None, h(NOE_KEY), None, 0, allow_unauthenticated=True, **kw)


def kamstrup_context():
    return SecurityContext(None, h(KAMSTRUP_EK), h(KAMSTRUP_AK))


def only(items):
    assert len(items) == 1, items
    return items[0]


def test_netz_noe_example_decodes():
    n = only(PushReceiver(noe_context()).feed(h(NOE_FRAMES)))
    assert isinstance(n, DataNotification), n
    assert n.long_invoke_id == NOE_INVOKE_ID and n.invoke_id == 0x06870E
    assert n.date_time == h(NOE_DATE_TIME)
    t = n.timestamp
    assert (t.year, t.month, t.day, t.hour, t.minute, t.second, t.deviation) == (2021, 9, 27, 9, 47, 15, -120), t
    assert n.system_title == h("4B464D6750000009") and n.invocation_counter == 0x23
    assert n.security_control == 0x20 and not n.authenticated
    body = n.body
    assert len(body) == 35, len(body)
    assert body[1] == h("0100010800FF") and body[2] == 12937 and body[3] == [0, 30], body[:4]  # +A Wh
    assert body[13] == h("0100200700FF") and body[14] == 2337 and body[15] == [-1, 35], body[13:16]  # U L1
    assert body[-1] == b"181220000009", body[-1]


def test_netz_noe_any_chunking_and_garbage():
    frames = h(NOE_FRAMES)
    for step in (1, 3, 17, 100):
        r = PushReceiver(noe_context())
        got = []
        data = b"\x00\xff noise" + frames
        for i in range(0, len(data), step):
            got += r.feed(data[i:i + step])
        kinds = [type(x).__name__ for x in got]
        assert kinds == ["FrameError", "DataNotification"], (step, kinds)
        assert r.notifications == 1 and r.errors == 1


def test_untagged_push_refused_unless_allowed():
    e = only(PushReceiver(SecurityContext(None, h(NOE_KEY))).feed(h(NOE_FRAMES)))
    assert isinstance(e, SecurityError) and "tag" in str(e), e
    e = only(PushReceiver(None).feed(h(NOE_FRAMES)))
    assert isinstance(e, PushError) and e.reason == "no_security", e


def test_replayed_push_is_reported_and_the_stream_goes_on():
    r = PushReceiver(noe_context())
    assert isinstance(only(r.feed(h(NOE_FRAMES))), DataNotification)
    e = only(r.feed(h(NOE_FRAMES)))
    assert isinstance(e, InvocationCounterError), e


def test_lost_segment_is_reported():
    frames = h(NOE_FRAMES)
    r = PushReceiver(noe_context())
    out = r.feed(frames[NOE_FRAME1_LEN:])  # the last segment alone
    assert [getattr(x, "reason", None) for x in out] == ["sequence"], out
    out = r.feed(frames[:NOE_FRAME1_LEN] + frames[:NOE_FRAME1_LEN] + frames[NOE_FRAME1_LEN:])
    kinds = [getattr(x, "reason", type(x).__name__) for x in out]
    assert kinds == ["incomplete", "DataNotification"], kinds


def test_flush_drops_partial_state():
    frames = h(NOE_FRAMES)
    r = PushReceiver(noe_context())
    assert r.feed(frames[:NOE_FRAME1_LEN + 10]) == []
    out = r.flush()
    assert sorted(x.reason for x in out) == ["incomplete", "truncated"], out
    assert isinstance(only(r.feed(frames)), DataNotification)


def test_kamstrup_hdlc_push_authenticated():
    r = PushReceiver(kamstrup_context(), "hdlc")
    n = only(r.feed(h(KAMSTRUP_FRAME)))
    assert isinstance(n, DataNotification), n
    assert n.authenticated and n.security_control == 0x30
    assert n.system_title == h(KAMSTRUP_SYSTEM_TITLE) and n.invocation_counter == KAMSTRUP_IC
    assert n.long_invoke_id == 0 and n.date_time == h(KAMSTRUP_DATE_TIME)
    assert len(n.body) == 65 and n.body[0] == "Kamstrup_V0001", n.body[:2]
    assert n.body[1] == h("0101010800FF") and n.body[2] == 6307498, n.body[1:3]


def test_kamstrup_wrong_tag_then_genuine_frame():
    frame = bytearray(h(KAMSTRUP_FRAME))
    apdu = frame[KAMSTRUP_APDU_AT:KAMSTRUP_APDU_END]
    apdu[-1] ^= 0x01  # last byte of the GCM tag
    forged = hdlc.encode(bytes(frame[3:4]), bytes(frame[4:5]), frame[5], b"\xe6\xe7\x00" + bytes(apdu))
    r = PushReceiver(kamstrup_context(), "hdlc")
    out = r.feed(forged + h(KAMSTRUP_FRAME))
    assert isinstance(out[0], aesgcm.AuthenticationError), out
    assert isinstance(out[1], DataNotification), "the counter was not consumed by the forgery"
    bad_key = PushReceiver(SecurityContext(None, h(KAMSTRUP_EK), h(KAMSTRUP_EK)), "hdlc")
    assert isinstance(only(bad_key.feed(h(KAMSTRUP_FRAME))), aesgcm.AuthenticationError)


def test_aidon_plain_hdlc_push():
    # no keys configured: a plain Data-Notification is what the meter sends
    n = only(PushReceiver(None, "hdlc").feed(h(AIDON_FRAME)))
    assert isinstance(n, DataNotification), n
    assert n.long_invoke_id == 0x40000000 and n.date_time is None and n.system_title is None
    assert len(n.body) == 12 and n.body[0] == [h("0101000281FF"), "AIDON_V0001"], n.body[0]
    assert n.body[3] == [h("0100010700FF"), 17, [0, 27]], n.body[3]  # P+ 17 W
    # with keys configured the same plain frame is refused
    e = only(PushReceiver(kamstrup_context(), "hdlc").feed(h(AIDON_FRAME)))
    assert isinstance(e, SecurityError), e


def test_hdlc_segmented_push_and_bad_fcs():
    # our own notification, general-glo-ciphered and cut into 3 HDLC segments
    s = SecurityContext(h("4D4D4D0000BC614E"), h(KAMSTRUP_EK), h(KAMSTRUP_AK), 7)
    body = h("020309060100010800FF0600001234" "0A0568656C6C6F")
    apdu = s.protect(0x30, push.encode_notification(body, 0x80000001, h(KAMSTRUP_DATE_TIME)), general=True)
    info = b"\xe6\xe7\x00" + apdu
    frames = [hdlc.encode(b"\x41", b"\x03", 0x13, info[i:i + 20], i + 20 < len(info)) for i in range(0, len(info), 20)]
    assert len(frames) == 4
    r = PushReceiver(kamstrup_context(), "hdlc")
    n = only(r.feed(b"".join(frames)))
    assert n.body == [h("0100010800FF"), 0x1234, "hello"] and n.long_invoke_id == 0x80000001, n
    bad = bytearray(frames[2])
    bad[12] ^= 0xFF
    out = PushReceiver(kamstrup_context(), "hdlc").feed(frames[0] + frames[1] + bytes(bad) + frames[3])
    assert isinstance(out[0], hdlc.FrameError), out  # and the joined segments fail as a whole
    assert all(not isinstance(x, DataNotification) for x in out), out


def test_wrapper_transport():
    # IEC 62056-47 frames (TCP/UDP push): meter wPort 1 -> push client 0x67
    s = SecurityContext(h("4D4D4D0000BC614E"), h(KAMSTRUP_EK), h(KAMSTRUP_AK), 3)
    apdu = s.protect(0x30, push.encode_notification(h("1200E6"), 9), general=True)
    plain = wrapper.encode(1, 0x67, push.encode_notification(h("0F01"), 10))
    stream = wrapper.encode(1, 0x67, apdu) + plain
    r = PushReceiver(kamstrup_context(), "wrapper")
    out = []
    for i in range(0, len(stream), 5):
        out += r.feed(stream[i:i + 5])
    assert out[0].body == 230 and out[0].authenticated, out
    # with keys configured, a plain push is refused (it would bypass them)
    assert isinstance(out[1], SecurityError) and "plain" in str(out[1]), out
    assert isinstance(only(r.feed(b"\x00\x02garbage!")), wrapper.WrapperError)
    lax = SecurityContext(None, h(KAMSTRUP_EK), h(KAMSTRUP_AK), 0, True)
    out = PushReceiver(lax, "wrapper").feed(stream) + PushReceiver(None, "wrapper").feed(plain)
    assert [x.body for x in out] == [230, 1, 1] and not out[1].authenticated, out


def test_general_block_transfer_reassembly():
    s = SecurityContext(h("4D4D4D0000BC614E"), h(KAMSTRUP_EK), h(KAMSTRUP_AK), 1)
    whole = s.protect(0x30, push.encode_notification(h("0F05"), 5), general=True)

    def block(num, data, last):
        return bytes((0xE0, 0x80 if last else 0x00, num >> 8, num & 0xFF, 0, 0, len(data))) + data

    blocks = [block(1, whole[:10], False), block(2, whole[10:30], False), block(3, whole[30:], True)]
    r = PushReceiver(kamstrup_context(), "apdu")
    assert r.feed_apdu(blocks[0]) == [] and r.feed_apdu(blocks[1]) == []
    n = only(r.feed_apdu(blocks[2]))
    assert n.body == 5 and n.long_invoke_id == 5, n
    # out of order, restarted, malformed
    r = PushReceiver(kamstrup_context(), "apdu")
    assert only(r.feed_apdu(blocks[1])).detail == "sequence"
    r.feed_apdu(blocks[0])
    assert only(r.feed_apdu(blocks[0])).detail == "incomplete"
    assert only(r.feed_apdu(blocks[2])).detail == "sequence"
    assert only(r.feed_apdu(blocks[0][:-1])).detail == "length"
    assert only(r.feed_apdu(b"\xe0\x80\x00")).reason == "truncated"
    raises(ValueError, r.feed, b"\x00")  # transport "apdu" takes whole APDUs only


def test_date_time_encodings():
    body = h("1200E6")  # long-unsigned 230
    for head, want in (("00", None), ("0C" + KAMSTRUP_DATE_TIME, KAMSTRUP_DATE_TIME),
                       ("090C" + KAMSTRUP_DATE_TIME, KAMSTRUP_DATE_TIME)):
        n = push.parse_notification(h("0F00000001" + head) + body)
        assert n.date_time == (None if want is None else h(want)) and n.body == 230, head
        assert n.system_title is None and n.security_control is None and not n.authenticated
    assert push.encode_notification(body, 1, h(KAMSTRUP_DATE_TIME)) == h("0F000000010C" + KAMSTRUP_DATE_TIME) + body
    raises(PushError, push.encode_notification, body, 1, b"short")


def test_malformed_notifications():
    for text, reason in (
        ("", "truncated"),
        ("C0010000080000010000FF0200", "not_notification"),
        ("0F000000", "truncated"),
        ("0F0000000100", "truncated"),  # no body
        ("0F00000001051122334455" "1200E6", "bad_date_time"),
        ("0F000000010C1122", "truncated"),
        ("0F0000000100" "07", "bad_body"),  # unassigned data tag
        ("0F0000000100" "1200", "bad_body"),  # truncated long-unsigned
        ("0F0000000100" "1200E6" "00", "trailing"),
    ):
        e = raises(PushError, push.decode_apdu, h(text))
        assert e.reason == reason, (text, e.reason)
    s = SecurityContext(h("4D4D4D0000BC614E"), h(KAMSTRUP_EK), h(KAMSTRUP_AK), 1)
    wire = s.protect(0x30, h("C0010000080000010000FF0200"), general=True)
    e = raises(PushError, push.decode_apdu, wire, kamstrup_context())
    assert e.reason == "not_ciphered_notification", e


def test_receiver_errors_are_bounded():
    r = PushReceiver(noe_context(), max_apdu=300)
    out = r.feed(b"\x68" * 5000)
    assert len(out) < 100, len(out)
    big = b"".join(mbus.segment(b"\x0f" + bytes(1000)))
    out = PushReceiver(noe_context(), max_apdu=300).feed(big)
    assert [getattr(x, "reason", None) for x in out] == ["oversized"], out
    raises(ValueError, PushReceiver, None, "serial")


_KNOWN = (DataNotification, PushError, mbus.MbusError, hdlc.HdlcError, wrapper.WrapperError,
          security.SecurityError, aesgcm.AuthenticationError)


def _mutate(rng, buf, n):
    # n edits of buf, in place
    for _ in range(n):
        at = rng.below(len(buf) + 1)
        state = rng.next()
        op = state % 5
        if op == 0 and buf:
            buf[at % len(buf)] ^= (state >> 8) & 0xFF or 1
        elif op == 1:
            buf[at:at + (state >> 8) % 30] = b""
        elif op == 2:
            buf[at:at] = bytes(((state >> 8) & 0xFF,)) * ((state >> 16) % 4 + 1)
        elif op == 3 and buf:
            buf[at % len(buf)] = (0x00, 0x0C, 0x0F, 0x10, 0x11, 0x16, 0x68, 0x7E, 0x81, 0xDB, 0xE0, 0xFF)[(state >> 8) % 12]
        else:
            buf[at:at] = buf[at:at + (state >> 8) % 16]


def test_fuzz_receiver_mutated_streams():
    # mutated M-Bus and HDLC streams, random chunks: every output is a
    # notification or one of the documented errors; buffers stay bounded
    s = SecurityContext(h("4D4D4D0000BC614E"), h(KAMSTRUP_EK), h(KAMSTRUP_AK), 1)
    plain = push.encode_notification(h("020209060100010800FF0600001234"), 1)
    seeds = (
        ("mbus", h(NOE_FRAMES) + b"".join(mbus.segment(plain, max_segment=13))),
        ("hdlc", h(KAMSTRUP_FRAME) + hdlc.encode(b"\x41", b"\x03", 0x13, b"\xe6\xe7\x00" + s.protect(0x30, plain, general=True))),
    )
    rng = Xorshift32(0x6A09E667)
    receivers = {"mbus": PushReceiver(noe_context(), "mbus", 600), "hdlc": PushReceiver(kamstrup_context(), "hdlc", 600)}
    for i in range(iterations(300) // 3 + 1):
        transport, data = seeds[i & 1]
        buf = bytearray(data)
        _mutate(rng, buf, 1 + i % 4)
        r = receivers[transport]
        r.security._peers.clear()  # so that the frames get past the replay check
        off = 0
        while off < len(buf):
            k = 1 + rng.below(200)
            for x in r.feed(bytes(buf[off:off + k])):
                assert isinstance(x, _KNOWN), repr(x)
            off += k
        if i % 7 == 0:
            r.flush()


def test_fuzz_decode_apdu_mutated():
    s = SecurityContext(h("4D4D4D0000BC614E"), h(KAMSTRUP_EK), h(KAMSTRUP_AK), 1)
    plain = push.encode_notification(h("020309060100010800FF0600001234" "0A0568656C6C6F"), 1, h(KAMSTRUP_DATE_TIME))
    seeds = (plain, s.protect(0x30, plain, general=True), h(KAMSTRUP_FRAME)[KAMSTRUP_APDU_AT:KAMSTRUP_APDU_END])
    rng = Xorshift32(0xBB67AE85)
    ctx = SecurityContext(None, h(KAMSTRUP_EK), h(KAMSTRUP_AK), 0, True)
    for i in range(iterations(300)):
        buf = bytearray(seeds[i % 3])
        _mutate(rng, buf, 1 + i % 3)
        ctx._peers.clear()
        try:
            n = push.decode_apdu(bytes(buf), ctx)
        except (PushError, SecurityError, aesgcm.AuthenticationError):
            continue
        assert isinstance(n, DataNotification)


def test_fuzz_receiver_mutated_content_in_valid_frames():
    # the APDU inside is mutated, then ciphered and framed correctly: the
    # header and body decoders see the damage, not the checksums
    s = SecurityContext(h("4D4D4D0000BC614E"), h(KAMSTRUP_EK), h(KAMSTRUP_AK), 1)
    plain = push.encode_notification(h("020409060100010800FF0600001234" "0A0568656C6C6F" "0103110111021203E8"), 7,
                                     h(KAMSTRUP_DATE_TIME))
    r = PushReceiver(kamstrup_context(), "mbus", 600)
    rng = Xorshift32(0x3C6EF372)
    good = 0
    for i in range(iterations(300) // 3 + 1):
        buf = bytearray(plain)
        _mutate(rng, buf, 1 + i % 3)
        if i % 4 == 0 or not buf:
            wire = bytes(buf)  # plain, not ciphered
        else:
            wire = s.protect(0x30, bytes(buf), general=True)
        for x in r.feed(b"".join(mbus.segment(wire, max_segment=40))):
            assert isinstance(x, _KNOWN), repr(x)
            good += isinstance(x, DataNotification)
    assert good > 0, "some mutants still decode"
