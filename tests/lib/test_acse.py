# lib/dlms/acse.py: AARQ, AARE, RLRQ, RLRE and the xDLMS initiate APDUs.
# Vectors:
#   GB = DLMS UA Green Book examples as quoted in dlms-cosem's
#        tests/test_asce/test_aarq.py and test_aare.py (github.com/u9n/dlms-cosem);
#   GX = what gurux-dlms 1.0.203's GXDLMSClient.aarqRequest()/releaseRequest()
#        send (tests/host/test_dlms_client_interop.py checks them again live);
#   SIM = recorded from host_tools/sim/dlms_meter.py (its AARE/RLRE are laid
#        out by the simulator, see its _aare()).
from fuzzing import Xorshift32, iterations, mutate_apdu
from mpcompat import raises
from push_vectors import GB_GLO_INITIATE_REQUEST, GB_INITIATE_REQUEST

from dlms import acse, apdu
from dlms.acse import AssociationError
from dlms.apdu import ApduError, DlmsError


def h(s):
    return bytes.fromhex(s)


# GB: no security, conformance 0x1E1D, max PDU 0xFFFF (TestEncodeAARE.test_decode)
AARQ_PUBLIC = "601DA109060760857405080101BE10040E01000000065F1F0400001E1DFFFF"
# GB: LLS "12345678", conformance 0x7E1F, max PDU 1200
AARQ_LLS = ("6036A1090607608574050801018A0207808B0760857405080201AC0A80083132333435363738"
            "BE10040E01000000065F1F0400007E1F04B0")
# GB: HLS-GMAC without ciphering, CtoS "K56iVagY"
AARQ_HLS = ("6036A1090607608574050801018A0207808B0760857405080205AC0A80084B35366956616759"
            "BE10040E01000000065F1F0400007E1F04B0")
# GB: ciphered context, LLS, calling-AP-title 4D4D4D0000BC614E, glo-initiate-request
AARQ_CIPHERED_LLS = ("6066A109060760857405080103A60A04084D4D4D0000BC614E8A0207808B07608574050802"
                     "01AC0A80083132333435363738BE34043221303001234567801302FF8A7874133D414CED25B4"
                     "2534D28DB0047720606B175BD52211BE6841DB204D39EE6FDB8E356855")
# GX: LLS with gurux's default proposal (conformance 0x401E5D, max PDU 0xFFFF)
AARQ_GURUX_LLS = ("6036a1090607608574050801018a0207808b0760857405080201ac0a80083132333435363738"
                  "be10040e01000000065f1f0400401e5dffff")
# GB AAREs
AARE_ACCEPTED = "6129A109060760857405080101A203020100A305A103020100BE10040E0800065F1F040000501F01F40007"
AARE_BAD_CONTEXT = "6129A109060760857405080101A203020101A305A103020102BE10040E0800065F1F040000501F01F40007"
AARE_VERSION_TOO_LOW = "611FA109060760857405080101A203020101A305A103020101BE0604040E010601"
AARE_HLS = ("6142A109060760857405080101A203020100A305A10302010E88020780890760857405080205AA0A"
            "8008503677524A323146BE10040E0800065F1F040000501F01F40007")
# dlms-cosem tests/test_hdlc (DC TestInformationResponseFrame): a meter's AARE
AARE_METER = "6129A109060760857405080101A203020100A305A103020100BE10040E0800065F1F0400001E1D04C80007"
# SIM
AARE_SIM_LLS = "6129a109060760857405080101a203020100a305a103020100be10040e0800065f1f040000121d04000007"
RLRQ_NORMAL = "6203800100"  # GX releaseRequest without protection
RLRE_NORMAL = "6303800100"  # SIM


def test_initiate_request():
    got = acse.initiate_request(0x7E1F, 1200)
    assert got == h("01000000065F1F0400007E1F04B0"), got.hex()
    key = h("00112233445566778899AABBCCDDEEFF")
    assert acse.initiate_request(0x7E1F, 1200, key) == h(GB_INITIATE_REQUEST)
    assert acse.initiate_request() == h("01000000065F1F04000012 1DFFFF".replace(" ", ""))


def test_aarq_encodings():
    ui = acse.initiate_request(0x1E1D, 0xFFFF)
    assert acse.aarq(ui) == h(AARQ_PUBLIC)
    ui = acse.initiate_request(0x7E1F, 1200)
    assert acse.aarq(ui, acse.MECH_LLS, b"12345678") == h(AARQ_LLS)
    assert acse.aarq(ui, acse.MECH_HLS_GMAC, b"K56iVagY") == h(AARQ_HLS)
    got = acse.aarq(h(GB_GLO_INITIATE_REQUEST), acse.MECH_LLS, b"12345678", h("4D4D4D0000BC614E"), True)
    assert got == h(AARQ_CIPHERED_LLS), got.hex()
    got = acse.aarq(acse.initiate_request(0x401E5D, 0xFFFF), acse.MECH_LLS, b"12345678")
    assert got == h(AARQ_GURUX_LLS), got.hex()


def test_aarq_long_fields_use_long_form_lengths():
    # a 64-octet challenge and a 200-octet user-information: 81 xx lengths
    got = acse.aarq(bytes(200), acse.MECH_HLS_GMAC, bytes(64), b"ABCDEFGH", True)
    assert got[:3] == h("60 81 fe".replace(" ", "")) or got[1] == 0x82, got[:4].hex()
    assert h("ac42804000") in got and h("be81cb0481c8") in got, got.hex()


def test_parse_accepted_aare():
    a = acse.parse_aare(h(AARE_ACCEPTED))
    assert a.accepted and (a.context, a.result, a.diagnostic, a.source) == (1, 0, 0, 1), a
    assert a.system_title is None and a.challenge is None and a.mechanism is None
    ir = acse.parse_initiate_response(a.user_information)
    assert (ir.version, ir.conformance, ir.max_pdu, ir.vaa_name) == (6, 0x501F, 500, 7), ir
    ir = acse.parse_initiate_response(acse.parse_aare(h(AARE_METER)).user_information)
    assert (ir.conformance, ir.max_pdu) == (0x1E1D, 0x4C8), ir
    ir = acse.parse_initiate_response(acse.parse_aare(h(AARE_SIM_LLS)).user_information)
    assert (ir.conformance, ir.max_pdu) == (acse.DEFAULT_CONFORMANCE, 1024), ir


def test_parse_rejected_aare():
    a = acse.parse_aare(h(AARE_BAD_CONTEXT))
    assert not a.accepted and a.result == 1  # rejected-permanent
    assert acse.diagnostic_name(a.diagnostic, a.source) == "application-context-name-not-supported"
    a = acse.parse_aare(h(AARE_VERSION_TOO_LOW))
    assert acse.diagnostic_name(a.diagnostic) == "no-reason-given"
    e = apdu.decode(a.user_information)
    assert e.error_name == "dlms-version-too-low", e


def test_parse_hls_aare():
    a = acse.parse_aare(h(AARE_HLS))
    assert a.accepted and a.diagnostic == 14  # authentication-required
    assert acse.diagnostic_name(a.diagnostic) == "authentication-required"
    assert a.mechanism == acse.MECH_HLS_GMAC and a.challenge == b"P6wRJ21F", a


def test_provider_diagnostic_and_responding_title():
    # A3 A2 (acse-service-provider), A4 responding-AP-title, 80 protocol
    # version and an unknown BD field, all within one AARE
    body = h("800207 80 A109060760857405080103 A203020102 A305A203020102 A40A04085345525645523031"
             " BD0141 BE0604040E010603".replace(" ", ""))
    a = acse.parse_aare(bytes((0x61, len(body))) + body)
    assert (a.context, a.result, a.source, a.diagnostic) == (3, 2, 2, 2), a
    assert a.system_title == b"SERVER01"
    assert acse.result_name(a.result) == "rejected-transient"
    assert acse.diagnostic_name(a.diagnostic, a.source) == "no-common-acse-version"


def test_malformed_aare():
    cases = (
        ("", "unexpected"), ("60", "unexpected"), ("61", "truncated"), ("6105", "length"),
        ("6103A10100", "bad_field"), ("6100", "bad_field"),
        ("6105A2030201", "length"), ("6105A20302010000", "trailing"),
        ("6109A10706056085740508", "bad_name"),
        ("610EA203020100A305A1030201000000", "bad_field"),  # no context
    )
    for text, reason in cases:
        e = raises(ApduError, acse.parse_aare, h(text))
        assert e.reason == reason, (text, e.reason)
        assert isinstance(e, DlmsError)


def test_initiate_response_errors():
    for text, reason in (("", "unexpected"), ("0e010601", "unexpected"), ("0800065F1F04", "truncated"),
                         ("0800065F1F0400001E1D04C8000700", "trailing"),
                         ("0800065F1F0500001E1D04C80007", "bad_field"), ("0801", "truncated")):
        e = raises(ApduError, acse.parse_initiate_response, h(text))
        assert e.reason == reason, (text, e.reason)
    ir = acse.parse_initiate_response(h("080105065F1F0400001E1D04C80007"))
    assert ir.qos == 5 and ir.version == 6, ir


def test_rlrq_and_rlre():
    assert acse.rlrq() == h(RLRQ_NORMAL)
    got = acse.rlrq(acse.RELEASE_NORMAL, b"\x21\x01\x02")
    assert got == h("620a800100be050403210102"), got.hex()
    r = acse.parse_rlre(h(RLRE_NORMAL))
    assert r.reason == 0 and r.user_information is None, r
    r = apdu.decode(h("630a800100be0504030801 02".replace(" ", "")))
    assert isinstance(r, acse.Rlre) and r.user_information == h("080102"), r
    assert acse.parse_rlre(h("6300")).reason is None
    for text in ("63", "6302800100", "6303800200", "6305be03050100"):
        raises(ApduError, acse.parse_rlre, h(text))


def test_association_error_names():
    e = AssociationError("rejected", None, 1, 13)
    assert (e.result_name, e.diagnostic_name) == ("rejected-permanent", "authentication-failure"), str(e)
    assert "authentication-failure" in str(e) and isinstance(e, DlmsError)
    e = AssociationError("rejected", None, 2, 2, 2)  # source: acse-service-provider
    assert e.diagnostic_name == "no-common-acse-version", str(e)
    assert acse.diagnostic_name(11) == "authentication-mechanism-name-not-recognised"
    assert acse.diagnostic_name(99) is None and acse.result_name(7) is None


def test_acse_decoder_fuzz():
    seeds = [h(x) for x in (AARE_ACCEPTED, AARE_VERSION_TOO_LOW, AARE_HLS, AARE_SIM_LLS, RLRE_NORMAL,
                            "630a800100be050403080102")]
    rng = Xorshift32(0x7F4A7C15)
    n = iterations(1500)
    ok = 0
    for i in range(n):
        data = mutate_apdu(rng, seeds[i % len(seeds)])
        try:
            r = apdu.decode(data)
            ok += 1
            ui = getattr(r, "user_information", None)
            if ui and ui[0] == 0x08:  # InitiateResponse
                acse.parse_initiate_response(ui)
        except ApduError:
            pass
    assert ok > n // 20, ok
