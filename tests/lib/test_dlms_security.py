# DLMS ciphering, HLS-GMAC and invocation counters (lib/dlms/security.py).
from fuzzing import Xorshift32, iterations
from mpcompat import raises
from push_vectors import (GB_AK, GB_CLIENT_IC, GB_CLIENT_TITLE, GB_CTOS, GB_EK, GB_F_CTOS, GB_F_STOC,
                          GB_GET_REQUEST, GB_GLO_GET_AUTH, GB_GLO_GET_AUTH_ENC, GB_GLO_GET_ENC,
                          GB_GLO_INITIATE_REQUEST, GB_IC, GB_INITIATE_REQUEST, GB_SERVER_TITLE, GB_STOC,
                          KAMSTRUP_AK, KAMSTRUP_APDU_AT, KAMSTRUP_APDU_END, KAMSTRUP_EK, KAMSTRUP_FRAME,
                          KAMSTRUP_IC, KAMSTRUP_SYSTEM_TITLE, h)

import aesgcm
from dlms import security
from dlms.security import AuthenticationError, InvocationCounterError, SecurityContext, SecurityError


def server(ic=GB_IC, **kw):
    return SecurityContext(h(GB_SERVER_TITLE), h(GB_EK), h(GB_AK), ic, **kw)


def client(**kw):
    return SecurityContext(h(GB_CLIENT_TITLE), h(GB_EK), h(GB_AK), GB_CLIENT_IC, **kw)


# Green Book Table 40 (see push_vectors): the three security policies.
def test_green_book_glo_get_request_protect():
    for sc, want in ((0x10, GB_GLO_GET_AUTH), (0x20, GB_GLO_GET_ENC), (0x30, GB_GLO_GET_AUTH_ENC)):
        s = server()
        got = s.protect(sc, h(GB_GET_REQUEST))
        assert got == h(want), "SC 0x%02x: %s" % (sc, got.hex())
        assert s.invocation_counter == GB_IC + 1


def test_green_book_glo_get_request_unprotect():
    for sc, text in ((0x10, GB_GLO_GET_AUTH), (0x20, GB_GLO_GET_ENC), (0x30, GB_GLO_GET_AUTH_ENC)):
        u = client(allow_unauthenticated=True).unprotect(h(text), h(GB_SERVER_TITLE))
        assert u.apdu == h(GB_GET_REQUEST), u
        assert (u.tag, u.security_control, u.invocation_counter) == (0xC8, sc, GB_IC), u
        assert u.system_title == h(GB_SERVER_TITLE)
        assert u.authenticated == bool(sc & 0x10) and u.encrypted == bool(sc & 0x20)


def test_green_book_glo_initiate_request():
    s = server()
    assert s.protect(0x30, h(GB_INITIATE_REQUEST)) == h(GB_GLO_INITIATE_REQUEST)
    u = client().unprotect(h(GB_GLO_INITIATE_REQUEST), h(GB_SERVER_TITLE))
    assert u.apdu == h(GB_INITIATE_REQUEST) and u.tag == 0x21


def test_green_book_hls_gmac_pass_3_and_4():
    # Table 43: the client answers the server's challenge StoC ...
    c = client()
    assert c.hls_gmac_response(0x10, h(GB_STOC)) == h(GB_F_STOC)
    assert c.invocation_counter == GB_CLIENT_IC + 1
    assert client().hls_gmac_response(0x10, h(GB_STOC), GB_CLIENT_IC) == h(GB_F_STOC)
    # ... and checks the server's answer to CtoS
    assert c.verify_hls_gmac(h(GB_F_CTOS), h(GB_CTOS), h(GB_SERVER_TITLE)) == GB_IC
    assert server().hls_gmac_response(0x10, h(GB_CTOS), GB_IC) == h(GB_F_CTOS)


def test_hls_gmac_wrong_answers():
    c = client()
    bad = bytearray(h(GB_F_CTOS))
    bad[-1] ^= 1
    raises(AuthenticationError, c.verify_hls_gmac, bytes(bad), h(GB_CTOS), h(GB_SERVER_TITLE))
    raises(AuthenticationError, c.verify_hls_gmac, h(GB_F_CTOS), h(GB_STOC), h(GB_SERVER_TITLE))
    raises(AuthenticationError, c.verify_hls_gmac, h(GB_F_CTOS), h(GB_CTOS), h(GB_CLIENT_TITLE))
    raises(SecurityError, c.verify_hls_gmac, h(GB_F_CTOS)[:-1], h(GB_CTOS), h(GB_SERVER_TITLE))
    raises(SecurityError, c.verify_hls_gmac, b"\x00" + h(GB_F_CTOS)[1:], h(GB_CTOS), h(GB_SERVER_TITLE))
    raises(SecurityError, c.verify_hls_gmac, h(GB_F_CTOS), h(GB_CTOS), b"short")


def test_kamstrup_push_general_glo_verifies():
    # A real meter's general-glo-ciphered Data-Notification, SC 0x30, tag checked.
    apdu = h(KAMSTRUP_FRAME)[KAMSTRUP_APDU_AT:KAMSTRUP_APDU_END]
    r = SecurityContext(None, h(KAMSTRUP_EK), h(KAMSTRUP_AK))
    u = r.unprotect(apdu)
    assert u.tag == 0xDB and u.security_control == 0x30, u
    assert u.system_title == h(KAMSTRUP_SYSTEM_TITLE) and u.invocation_counter == KAMSTRUP_IC
    assert u.apdu[:6] == h("0F000000000C"), bytes(u.apdu[:6]).hex()
    assert b"Kamstrup_V0001" in u.apdu
    assert r.peer_counter(h(KAMSTRUP_SYSTEM_TITLE)) == KAMSTRUP_IC
    # the same frame again is a replay
    raises(InvocationCounterError, r.unprotect, apdu)
    # a wrong authentication key fails the tag
    other = SecurityContext(None, h(KAMSTRUP_EK), h(KAMSTRUP_EK))
    raises(AuthenticationError, other.unprotect, apdu)
    assert other.peer_counter(h(KAMSTRUP_SYSTEM_TITLE)) is None, "not recorded"


def test_general_glo_and_ded_round_trip():
    apdu = h("0F0000000100090548656C6C6F")  # a Data-Notification carrying "Hello"
    for sc in (0x10, 0x20, 0x30):
        for dedicated in (False, True):
            s = server()
            r = client(allow_unauthenticated=True)
            s.dedicated_key = r.dedicated_key = bytes(range(16, 32))
            wire = s.protect(sc, apdu, general=True, dedicated=dedicated)
            assert wire[0] == (0xDC if dedicated else 0xDB) and wire[1:10] == b"\x08" + h(GB_SERVER_TITLE)
            u = r.unprotect(wire)
            assert u.apdu == apdu and u.security_control == sc, (sc, dedicated)
            if dedicated:  # the dedicated key, not the global one
                r2 = client(allow_unauthenticated=True)
                r2.dedicated_key = bytes(16)
                if sc & 0x10:
                    raises(AuthenticationError, r2.unprotect, wire)
                else:
                    assert r2.unprotect(wire).apdu != apdu


def test_service_specific_tags():
    assert security.glo_tag(0xC0) == 0xC8 and security.ded_tag(0xC0) == 0xD0
    assert security.glo_tag(0xC4) == 0xCC and security.glo_tag(0xC7) == 0xCF
    assert security.glo_tag(0x01) == 0x21 and security.glo_tag(0x08) == 0x28
    assert security.plain_tag(0xCB) == (0xC3, False) and security.plain_tag(0xD7) == (0xC7, True)
    assert security.plain_tag(0x0F) is None
    raises(SecurityError, security.glo_tag, 0x0F)  # data-notification: general-glo only
    assert security.is_ciphered(0xDB) and security.is_ciphered(0xCC) and not security.is_ciphered(0xC4)
    # every row round-trips through both directions
    for plain, glo, ded in security.CIPHERED_TAGS:
        assert security.plain_tag(glo) == (plain, False) and security.plain_tag(ded) == (plain, True)
    s = server()
    raises(SecurityError, s.protect, 0x30, h("0F00000001000000"))


def test_long_apdu_lengths():
    for n in (100, 127, 128, 255, 256, 1000):
        s = server()
        apdu = b"\xc4" + bytes(n)
        wire = s.protect(0x30, apdu)
        assert client().unprotect(wire, h(GB_SERVER_TITLE)).apdu == apdu, n


def test_replay_and_counter_order():
    s = server(ic=5)
    r = client()
    first = s.protect(0x30, h(GB_GET_REQUEST))
    second = s.protect(0x30, h(GB_GET_REQUEST))
    assert r.unprotect(second, h(GB_SERVER_TITLE)).invocation_counter == 6
    e = raises(InvocationCounterError, r.unprotect, first, h(GB_SERVER_TITLE))  # older
    assert isinstance(e, SecurityError)
    raises(InvocationCounterError, r.unprotect, second, h(GB_SERVER_TITLE))  # same
    assert r.unprotect(s.protect(0x30, h(GB_GET_REQUEST)), h(GB_SERVER_TITLE)).invocation_counter == 7
    # counters are per sender system title; restored ones count too
    r.set_peer_counter(h(GB_CLIENT_TITLE), 100)
    raises(InvocationCounterError, r.unprotect, client().protect(0x30, h(GB_GET_REQUEST)), h(GB_CLIENT_TITLE))
    s.invocation_counter = 0xFFFFFFFF
    s.protect(0x30, h(GB_GET_REQUEST))
    raises(SecurityError, s.protect, 0x30, h(GB_GET_REQUEST))  # counter exhausted


def test_tampering_is_detected_and_not_recorded():
    wire = bytearray(server().protect(0x30, h(GB_GET_REQUEST)))
    for i in range(2, len(wire)):  # every byte after the length
        bad = bytearray(wire)
        bad[i] ^= 0x04
        r = client()
        e = raises((AuthenticationError, SecurityError), r.unprotect, bytes(bad), h(GB_SERVER_TITLE))
        assert r.peer_counter(h(GB_SERVER_TITLE)) is None, (i, e)
    raises(AuthenticationError, client().unprotect, bytes(wire), h(GB_CLIENT_TITLE))  # wrong IV


def test_policy_refuses_untagged_apdus_by_default():
    r = client()
    e = raises(SecurityError, r.unprotect, h(GB_GLO_GET_ENC), h(GB_SERVER_TITLE))
    assert "tag" in str(e), e
    plain = h("C8061001234567")  # SC 0x10 but only 1 byte of payload: no room for a tag
    raises(SecurityError, client().unprotect, plain, h(GB_SERVER_TITLE))
    # no security at all (SC 0x00) is refused too, accepted only when allowed
    s = server()
    wire = s.protect(0x00, h(GB_GET_REQUEST))
    raises(SecurityError, client().unprotect, wire, h(GB_SERVER_TITLE))
    assert client(allow_unauthenticated=True).unprotect(wire, h(GB_SERVER_TITLE)).apdu == h(GB_GET_REQUEST)


def test_downgrade_after_authenticated_frames_is_refused():
    s = server(ic=1)
    r = client(allow_unauthenticated=True)
    r.unprotect(s.protect(0x30, h(GB_GET_REQUEST)), h(GB_SERVER_TITLE))
    e = raises(SecurityError, r.unprotect, s.protect(0x20, h(GB_GET_REQUEST)), h(GB_SERVER_TITLE))
    assert not isinstance(e, InvocationCounterError), e


def test_unsupported_and_missing_keys():
    s = server()
    raises(SecurityError, s.protect, 0xB0, h(GB_GET_REQUEST))  # compression
    raises(SecurityError, s.protect, 0x32, h(GB_GET_REQUEST))  # suite 2 (AES-256)
    raises(SecurityError, s.protect, 0x70, h(GB_GET_REQUEST))  # broadcast key not set
    raises(SecurityError, s.protect, 0x30, h(GB_GET_REQUEST), False, True)  # no dedicated key
    s.broadcast_key = bytes(range(16))
    wire = s.protect(0x70, h(GB_GET_REQUEST))
    raises(SecurityError, client().unprotect, wire, h(GB_SERVER_TITLE))
    r = client()
    r.broadcast_key = bytes(range(16))
    assert r.unprotect(wire, h(GB_SERVER_TITLE)).apdu == h(GB_GET_REQUEST)
    # suite 1 uses the same AES-GCM-128
    assert client().unprotect(server().protect(0x31, h(GB_GET_REQUEST)), h(GB_SERVER_TITLE)).security_control == 0x31
    no_ak = SecurityContext(h(GB_CLIENT_TITLE), h(GB_EK))
    raises(SecurityError, no_ak.unprotect, h(GB_GLO_GET_AUTH_ENC), h(GB_SERVER_TITLE))
    raises(SecurityError, no_ak.hls_gmac_response, 0x10, h(GB_STOC))
    raises(SecurityError, SecurityContext, b"short", h(GB_EK))
    raises(SecurityError, SecurityContext, None, bytes(15))
    raises(SecurityError, SecurityContext(None, h(GB_EK)).protect, 0x30, h(GB_GET_REQUEST))


def test_malformed_apdus():
    r = client(allow_unauthenticated=True)
    st = h(GB_SERVER_TITLE)
    for text in (
        "",  # nothing
        "C8",  # no length
        "C81E",  # length, nothing after
        "C8821E",  # truncated long length
        "C8850000001E",  # unsupported length form
        "C8051001234567",  # length too short by... exactly: 5 bytes, no room for a tag
        "C8041001234567",  # length disagrees with the bytes that follow
        "C8032001234567",
        "C00100",  # not ciphered
        "DD00",  # general-ciphering
        "DB0701020304050607",  # system title of 7
        "DB08010203040506",  # truncated system title
        "DB080102030405060708",  # no content length
        "C8062001234567AA" "FF",  # trailing byte
        "CC0E2001234567" "C0010000080000010000",  # holds a get-request, not a get-response
    ):
        e = raises((SecurityError, AuthenticationError), r.unprotect, h(text), st)
        assert isinstance(e, (SecurityError, aesgcm.GcmError)), (text, e)
    raises(SecurityError, r.unprotect, h(GB_GLO_GET_ENC))  # sender system title unknown
    raises(SecurityError, r.unprotect, h(GB_GLO_GET_ENC), b"short")


def test_peer_table_is_bounded():
    r = SecurityContext(None, h(GB_EK), h(GB_AK))
    for i in range(16):
        s = SecurityContext(bytes((i,)) * 8, h(GB_EK), h(GB_AK), 1)
        r.unprotect(s.protect(0x30, h("0F000000000001"), general=True))
    s = SecurityContext(b"\xee" * 8, h(GB_EK), h(GB_AK), 1)
    e = raises(SecurityError, r.unprotect, s.protect(0x30, h("0F000000000001"), general=True))
    assert "system titles" in str(e), e


def test_fuzz_unprotect_mutated_apdus():
    # Mutated ciphered APDUs: a result or one of the documented errors, nothing else.
    seeds = (h(GB_GLO_GET_AUTH), h(GB_GLO_GET_ENC), h(GB_GLO_GET_AUTH_ENC), h(GB_GLO_INITIATE_REQUEST),
             server().protect(0x30, h("0F0000000100090548656C6C6F"), general=True))
    rng = Xorshift32(0x2545F491)
    for i in range(iterations(300)):
        buf = bytearray(seeds[i % len(seeds)])
        for _ in range(1 + i % 3):
            op = rng.below(4)
            state = rng.next()
            at = state % (len(buf) + 1)
            if op == 0 and buf:
                buf[at % len(buf)] ^= (state >> 8) & 0xFF or 1
            elif op == 1:
                buf = buf[:at]
            elif op == 2:
                buf = buf[:at] + bytes(((state >> 8) & 0xFF,)) + buf[at:]
            elif buf:
                buf[at % len(buf)] = (0x00, 0x08, 0x10, 0x20, 0x30, 0x7F, 0x80, 0x81, 0x82, 0xDB, 0xFF)[(state >> 8) % 11]
        r = client(allow_unauthenticated=bool(i & 1))
        try:
            u = r.unprotect(bytes(buf), h(GB_SERVER_TITLE))
        except (SecurityError, AuthenticationError):
            continue
        assert isinstance(u.apdu, bytes)
