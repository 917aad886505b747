# lib/atecc608.py: the ATECC608 packet layer, command encodings, response
# parsing and the config zone. The driver against a simulated chip is
# tests/host/test_atecc608_driver.py.
from fuzzing import Xorshift32, iterations, mutate
from mpcompat import raises

import atecc608 as se
from atecc608 import AteccError


def h(text):
    return bytes.fromhex(text.replace(" ", ""))


def crc_bitwise(data):
    # The chip's CRC as the ATECC508A/608A datasheets describe it, one bit at
    # a time (an independent check of the table-driven crc16).
    crc = 0
    for byte in data:
        for bit in range(8):
            feedback = ((byte >> bit) & 1) ^ (crc >> 15)
            crc = (crc << 1) & 0xFFFF
            if feedback:
                crc ^= 0x8005
    return crc


def with_crc(body):
    # count | body | CRC, the framing of a response
    frame = bytes((len(body) + 3,)) + bytes(body)
    c = crc_bitwise(frame)
    return frame + bytes((c & 0xFF, c >> 8))


def test_crc_of_the_info_command():
    # The Info command 03 07 30 00 00 00 03 5D, shown in Microchip's
    # ATECC508A/608A application notes and bus traces: CRC bytes 03 5D.
    got = se.crc16(h("0730000000"))
    assert got == 0x5D03, hex(got)
    got = se.info()
    assert got == h("03 07 30 00 00 00 03 5D"), got.hex()


def test_crc_of_the_wake_token():
    # The wake response 04 11 33 43 (datasheet, "I2C synchronization"): its
    # last two bytes are the CRC of 04 11.
    got = se.crc16(h("0411"))
    assert got == 0x4333, hex(got)
    assert se.WAKE_TOKEN == h("04113343")


def test_crc_equals_bitwise_reference():
    rng = Xorshift32(608)
    for n in (0, 1, 2, 7, 31, 64, 135):
        data = bytes(rng.below(256) for _ in range(n))
        got = se.crc16(data)
        want = crc_bitwise(data)
        assert got == want, (n, hex(got), hex(want))
    # the reflection of CRC-16/ARC (check 0xBB3D in the CRC RevEng catalogue)
    assert se.crc16(b"123456789") == 0xBCDD


def test_crc_range_equals_slice():
    data = bytes(range(200))
    for start, end in ((0, 0), (1, 8), (17, 200)):
        assert se.crc16(data, start, end) == se.crc16(data[start:end]), (start, end)


def check_packet(packet, opcode, param1, param2, data=b""):
    # word address, count, opcode, param1, param2 LE, data, CRC LE
    n = 7 + len(data)
    assert len(packet) == n + 1, len(packet)
    assert packet[0] == 0x03 and packet[1] == n, packet[:2]
    assert packet[2] == opcode and packet[3] == param1, packet[2:4]
    assert packet[4] | packet[5] << 8 == param2, packet[4:6]
    assert bytes(packet[6:n - 1]) == bytes(data)
    c = crc_bitwise(packet[1:n - 1])
    assert packet[n - 1] == c & 0xFF and packet[n] == c >> 8, packet.hex()


def test_read_encodings():
    check_packet(se.read_config(0, 32), 0x02, 0x80, 0x0000)
    check_packet(se.read_config(96, 32), 0x02, 0x80, 0x0018)  # block 3
    check_packet(se.read_config(84), 0x02, 0x00, 0x0015)  # word 21: bytes 84-87
    # data zone: block << 8 | slot << 3 | word
    assert se.read_address(se.ZONE_DATA, slot=8, block=1) == 0x0140
    assert se.read_address(se.ZONE_CONFIG, block=2, offset=5) == 0x0015
    check_packet(se.read(se.ZONE_DATA, 0x0140, 32), 0x02, 0x82, 0x0140)
    check_packet(se.read(se.ZONE_OTP, 0x0001), 0x02, 0x01, 0x0001)


def test_info_random_genkey_encodings():
    check_packet(se.info(), 0x30, 0x00, 0)
    check_packet(se.random(), 0x1B, 0x00, 0)
    check_packet(se.genkey(0), 0x40, 0x04, 0)
    check_packet(se.genkey(15), 0x40, 0x04, 15)
    check_packet(se.genkey_public(5), 0x40, 0x00, 5)


def test_nonce_sign_verify_encodings():
    digest = bytes(range(32))
    check_packet(se.nonce_passthrough(digest), 0x16, 0x03, 0, digest)
    check_packet(se.nonce_passthrough(digest, se.TARGET_MSG_DIGEST), 0x16, 0x43, 0, digest)
    check_packet(se.nonce_passthrough(digest * 2, se.TARGET_ALT_KEY), 0x16, 0xA3, 0, digest * 2)
    check_packet(se.sign_external(0), 0x41, 0x80, 0)
    check_packet(se.sign_external(2, se.SOURCE_MSG_DIGEST), 0x41, 0xA0, 2)
    sig = bytes(range(64))
    pub = bytes(range(64, 128))
    # data: signature r||s, then the public key X||Y; param2 4 = P-256
    check_packet(se.verify_external(sig, pub), 0x45, 0x02, 0x0004, sig + pub)
    check_packet(se.verify_external(sig, pub, se.SOURCE_MSG_DIGEST), 0x45, 0x22, 0x0004, sig + pub)


def test_builders_reject_bad_arguments():
    cases = (
        (se.genkey, 16), (se.genkey_public, -1), (se.sign_external, 16),
        (se.read_config, 2), (se.read_config, 128), (se.read_config, 16, 32),
        (se.read, se.ZONE_DATA, 0x0149, 32), (se.read, se.ZONE_CONFIG, 0, 8), (se.read, 3, 0),
        (se.nonce_passthrough, bytes(31)), (se.nonce_passthrough, bytes(33)),
        (se.verify_external, bytes(63), bytes(64)), (se.verify_external, bytes(64), bytes(65)),
        (se.command, 0x30, 0, 0, bytes(149)),
    )
    for case in cases:
        exc = raises(AteccError, case[0], *case[1:])
        assert exc.reason == "arg", (case, exc.reason)
        assert exc.status is None
    # the longest command the 608 takes still encodes
    assert len(se.command(0x30, 0, 0, bytes(148))) == 156


def test_response_lengths_and_times():
    assert se.response_len(se.OP_INFO, 0) == 4
    assert se.response_len(se.OP_READ, 0x00) == 4
    assert se.response_len(se.OP_READ, 0x80) == 32
    assert se.response_len(se.OP_NONCE, 0x03) == 1
    assert se.response_len(se.OP_SIGN, 0x80) == 64
    assert se.response_len(se.OP_VERIFY, 0x02) == 1
    assert se.response_len(se.OP_GENKEY, 0x04) == 64
    assert se.response_len(se.OP_GENKEY, 0x00) == 64
    assert se.response_len(se.OP_RANDOM, 0) == 32
    for op in (se.OP_INFO, se.OP_READ, se.OP_NONCE, se.OP_RANDOM, se.OP_SIGN, se.OP_VERIFY, se.OP_GENKEY):
        assert 1 <= se.max_exec_ms(op) <= 200, op
    assert se.max_exec_ms(se.OP_SIGN) > se.max_exec_ms(se.OP_NONCE) > se.max_exec_ms(se.OP_READ)


def test_response_with_data():
    # Info of a 608A: revision 00 00 60 02
    packet = with_crc(h("00006002"))
    assert packet[0] == 7
    got = se.response(packet, 4)
    assert got == h("00006002"), got
    # bytes after `count` (a reused buffer) are ignored
    assert se.response(packet + b"\xff" * 60, 4) == h("00006002")
    sig = bytes(range(64))
    assert se.response(with_crc(sig), 64) == sig


def test_response_status_only():
    assert se.response(with_crc(b"\x00"), 1) == b"\x00"


def test_every_status_is_reported():
    for code in (0x01, 0x03, 0x05, 0x07, 0x08, 0x0F, 0x11, 0xEE, 0xFF, 0x42):
        for want in (1, 4, 64):
            exc = raises(AteccError, se.response, with_crc(bytes((code,))), want)
            assert exc.reason == "status" and exc.status == code, (code, exc.reason, exc.status)
            assert ("%02X" % code) in str(exc), str(exc)
    assert "watchdog" in se.status_name(0xEE)
    assert se.status_name(0x42) == "unknown status"


def test_response_errors():
    good = with_crc(h("00006002"))
    cases = (
        (b"", 4, "length"),
        (good[:3], 4, "length"),  # count says 7, only 3 bytes
        (good[:6], 4, "length"),
        (h("03 00 00"), 1, "length"),  # count below 4
        (h("00 11 33 43"), 1, "length"),
        (good[:-1] + bytes((good[-1] ^ 1,)), 4, "crc"),
        (bytes((good[0],)) + b"\x01" + good[2:], 4, "crc"),
        (good, 32, "length"),  # a 4-byte answer where 32 were expected
        (with_crc(b"\x00"), 64, "length"),  # success status where a signature was expected
        (with_crc(bytes(64)), 32, "length"),
    )
    for packet, want, reason in cases:
        exc = raises(AteccError, se.response, packet, want)
        assert exc.reason == reason, (packet, want, exc.reason, str(exc))
        assert exc.status is None


def test_wake_token_check():
    assert se.wake_error(se.WAKE_TOKEN) is None
    assert se.wake_error(bytearray(se.WAKE_TOKEN)) is None
    # a 608 whose power-on self test failed wakes with status 0x07
    err = se.wake_error(with_crc(b"\x07"))
    assert err.reason == "wake" and err.status == 0x07, (err.reason, err.status)
    for junk in (h("ffffffff"), h("04113344"), h("00000000")):
        err = se.wake_error(junk)
        assert err.reason == "wake" and err.status is None, junk


# A config zone sample (made for this test, laid out as in the ATECC608A
# datasheet's config zone map): serial 01 23 AB CD EF 01 02 03 EE,
# revision 00 00 60 03, I2C address 0x6C, watchdog 10 s, config locked,
# data zone unlocked, slot 10 locked on its own. Slots:
#   0 P-256 private, ext+int sign, GenKey (WriteConfig 2)   2083 / 0033
#   1 P-256 private, ext sign, no PubInfo, WriteConfig 0     0081 / 0011
#   2 P-256 private, ECDH only                               2084 / 0033
#   3 AES key, secret                                        0F8F / 0018
#   4 data, secret, encrypted reads with key 5               00C5 / 005C
#   5 P-256 private needing authorisation by key 3           2083 / 03B3
#   8 data, clear                                            0000 / 003C
#   9, 10 P-256 public keys                                  0000 / 0030
#   others zero
CONFIG_SAMPLE = h(
    "0123abcd 00006003 ef010203ee 01 01 00 d8 00 00 04"
    "8320 8100 8420 8f0f c500 8320 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000"
    "ffffffff00000000 ffffffff00000000"
    "00 00 0000 00 0000 000000000000000000"
    "00 00 55 00 fffb 0000 00000000"
    "3300 1100 3300 1800 5c00 b303 0000 0000 3c00 3000 3000 0000 0000 0000 0000 0000")


def test_config_sample_is_128_bytes():
    assert len(CONFIG_SAMPLE) == 128, len(CONFIG_SAMPLE)


def test_parse_config():
    cfg = se.parse_config(CONFIG_SAMPLE)
    assert cfg["serial"] == h("0123abcdef010203ee"), cfg["serial"]
    assert cfg["revision"] == h("00006003")
    assert cfg["i2c_enable"] is True
    assert cfg["i2c_address"] == 0x6C
    assert cfg["watchdog_ms"] == 10000
    assert cfg["config_locked"] is True
    assert cfg["data_locked"] is False
    assert cfg["slot_locked"] == 1 << 10, hex(cfg["slot_locked"])


def test_slot_flags():
    s = se.slot_info(CONFIG_SAMPLE, 0)
    assert s["slot_config"] == 0x2083 and s["key_config"] == 0x0033
    assert s["private"] and s["key_type"] == "p256" and s["pub_info"] and s["lockable"]
    assert s["ext_sign"] and s["int_sign"] and not s["ecdh"]
    assert s["secret"] and not s["readable"] and s["write_config"] == 2
    assert s["genkey"] and not s["slot_locked"] and not s["data_locked"]

    s = se.slot_info(CONFIG_SAMPLE, 1)
    assert s["private"] and s["ext_sign"] and not s["int_sign"] and not s["pub_info"]
    assert s["genkey"]  # data zone unlocked: WriteConfig not yet in force

    s = se.slot_info(CONFIG_SAMPLE, 2)
    assert s["ecdh"] and not s["ext_sign"] and not s["int_sign"]

    s = se.slot_info(CONFIG_SAMPLE, 3)
    assert s["key_type"] == "aes" and not s["private"] and s["secret"] and s["write_key"] == 0xF
    assert not s["ext_sign"] and not s["genkey"] and not s["readable"]

    s = se.slot_info(CONFIG_SAMPLE, 4)
    assert s["key_type"] == "data" and s["encrypt_read"] and s["read_key"] == 5 and s["req_random"]
    assert not s["readable"]

    s = se.slot_info(CONFIG_SAMPLE, 5)
    assert s["req_auth"] and s["auth_key"] == 3 and s["ext_sign"]

    s = se.slot_info(CONFIG_SAMPLE, 8)
    assert s["key_type"] == "data" and not s["secret"]
    assert not s["readable"]  # the data zone cannot be read before it is locked

    s = se.slot_info(CONFIG_SAMPLE, 10)
    assert s["key_type"] == "p256" and not s["private"] and s["slot_locked"] and not s["genkey"]

    s = se.slot_info(CONFIG_SAMPLE, 15)
    assert s["key_type"] == "reserved" and s["slot_config"] == 0 and s["key_config"] == 0


def test_lock_bytes_change_the_flags():
    locked = bytearray(CONFIG_SAMPLE)
    locked[86] = 0x00  # LockValue: data zone locked
    assert se.parse_config(locked)["data_locked"] is True
    assert se.slot_info(locked, 0)["genkey"]  # WriteConfig allows it
    assert not se.slot_info(locked, 1)["genkey"]  # WriteConfig 0
    assert se.slot_info(locked, 8)["readable"]
    unlocked = bytearray(CONFIG_SAMPLE)
    unlocked[87] = 0x55  # LockConfig: config zone unlocked
    assert se.parse_config(unlocked)["config_locked"] is False
    assert not se.slot_info(unlocked, 0)["genkey"]  # GenKey needs the config locked


def test_config_errors():
    for bad in (b"", CONFIG_SAMPLE[:127], CONFIG_SAMPLE + b"\x00"):
        exc = raises(AteccError, se.parse_config, bad)
        assert exc.reason == "length", exc.reason
        exc = raises(AteccError, se.slot_info, bad, 0)
        assert exc.reason == "length", exc.reason
    for slot in (-1, 16):
        exc = raises(AteccError, se.slot_info, CONFIG_SAMPLE, slot)
        assert exc.reason == "arg", exc.reason


def test_fuzz_response_parsing():
    # Seeded mutations of real-shaped responses: response() returns data of
    # the expected length or raises AteccError, nothing else.
    rng = Xorshift32(0x608)
    seeds = (with_crc(h("00006002")), with_crc(b"\x00"), with_crc(b"\x01"), with_crc(bytes(range(64))),
             with_crc(bytes(range(32))), se.WAKE_TOKEN)
    wants = (1, 4, 32, 64)
    parsed = failed = 0
    for i in range(iterations(1500)):
        packet = mutate(rng, seeds[i % len(seeds)])
        want = wants[rng.below(len(wants))]
        try:
            data = se.response(packet, want)
        except AteccError as exc:
            assert exc.reason in ("crc", "status", "length"), exc.reason
            failed += 1
        else:
            assert len(data) == want, (packet, want, data)
            parsed += 1
        err = se.wake_error(packet)
        assert err is None or err.reason == "wake", err
    assert parsed and failed, (parsed, failed)


def test_fuzz_config_parsing():
    rng = Xorshift32(0x128)
    for _ in range(iterations(300)):
        config = mutate(rng, CONFIG_SAMPLE)
        try:
            cfg = se.parse_config(config)
            s = se.slot_info(config, rng.below(16))
        except AteccError as exc:
            assert exc.reason == "length" and len(config) != 128, exc.reason
        else:
            assert len(cfg["serial"]) == 9 and isinstance(s["genkey"], bool)
