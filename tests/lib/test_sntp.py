# lib/sntp.py: request and answer packets (RFC 4330), under both interpreters.
import struct

import sntp
from fuzzing import Xorshift32, iterations, mutate
from mpcompat import raises

NTP_UNIX = 2208988800


def answer(nonce_ms, recv_ms, xmit_ms, li=0, stratum=2, mode=4, origin=None):
    o = sntp._to_ntp(nonce_ms if origin is None else origin)
    r = sntp._to_ntp(recv_ms)
    t = sntp._to_ntp(xmit_ms)
    return struct.pack("!BBbb4xI4s", li << 6 | 4 << 3 | mode, stratum, 6, -20, 0, b"GPS\x00") + \
        struct.pack("!II", *r) + struct.pack("!IIIIII", o[0], o[1], r[0], r[1], t[0], t[1])


def test_request_is_version_4_client_with_the_nonce():
    req = sntp.request(1750503600123)
    assert len(req) == 48 and req[0] == 0x23
    sec, frac = struct.unpack_from("!II", req, 40)
    assert sec == 1750503600 + NTP_UNIX and frac == 123 * (1 << 32) // 1000


def test_answer_gives_server_times_in_unix_ms():
    nonce = 123456789
    got = sntp.parse(answer(nonce, 1750503600000, 1750503600250), nonce)
    assert got == (1750503600000, 1750503600250), got


def test_times_after_the_2036_era_rollover():
    nonce = 5
    t = 2200000000000  # 2039
    assert sntp.parse(answer(nonce, t, t + 1), nonce) == (t, t + 1)


def test_refusals():
    nonce = 777
    good = (nonce, 1750503600000, 1750503600001)
    cases = (
        ("size", answer(*good)[:47]),
        ("mode", answer(*good, mode=3)),
        ("unsynchronised", answer(*good, li=3)),
        ("stratum", answer(*good, stratum=0)),
        ("stratum", answer(*good, stratum=16)),
        ("origin", answer(*good, origin=778)),
        ("time", answer(nonce, 1750503600000, 1500000000000)),
        ("time", answer(nonce, 1750503600005, 1750503600000)),
    )
    for reason, data in cases:
        e = raises(sntp.SntpError, sntp.parse, data, nonce)
        assert e.reason == reason, (reason, e.reason)


def test_fuzzed_answers_give_sntp_error_only():
    rng = Xorshift32(4330)
    nonce = 99
    base = answer(nonce, 1750503600000, 1750503600100)
    for _ in range(iterations(2000)):
        data = mutate(rng, base)
        try:
            recv, sent = sntp.parse(data, nonce)
        except sntp.SntpError:
            continue
        assert recv <= sent
