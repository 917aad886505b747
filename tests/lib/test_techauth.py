# lib/techauth.py: technician PIN and challenge-response, the lockout and
# sessions, all with explicit times.
from fuzzing import Xorshift32, iterations, noise
from mpcompat import raises

import techauth
from techauth import AuthError, TechAuth

KID = bytes.fromhex("cc ae 1d 86 cc e0 66 af".replace(" ", ""))  # the protocol vectors' device
SALT = b"pgw test salt 16"
KEY = b"pgw technician key for tests 32B"
NONCE = bytes(range(16))
T0 = 1000


def auth(**kw):
    return TechAuth(KID, techauth.make_pin_record("123456", SALT), KEY, **kw)


def reason(func, *args):
    return raises(AuthError, func, *args).reason


def test_pbkdf2_rfc7914_vectors():
    # RFC 7914 section 11, PBKDF2-HMAC-SHA256: the first 32 bytes of dkLen 64
    got = techauth.pbkdf2_sha256(b"passwd", b"salt", 1)
    assert got.hex() == "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc", got.hex()
    got = techauth.pbkdf2_sha256(b"Password", b"NaCl", 80000)
    assert got.hex() == "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56", got.hex()


def test_pin_record():
    # the PBKDF2 output: CPython's hashlib.pbkdf2_hmac("sha256", b"123456", SALT, 1000)
    rec = techauth.make_pin_record("123456", SALT)
    assert len(rec) == 51 and rec[:3] == b"\x01\x03\xe8" and rec[3:19] == SALT, rec
    assert rec[19:].hex() == "656177ca728f2ac02cc06dbb42a524f8112bada689f453f4d62ace2038c78a14", rec.hex()
    assert techauth.make_pin_record(b"123456", SALT) == rec
    for pin in ("123", "1234567890123", "12a4", "", " 1234", 1234):
        assert reason(techauth.make_pin_record, pin, SALT) == "malformed", pin
    assert reason(techauth.make_pin_record, "1234", b"short") == "malformed"
    assert reason(techauth.make_pin_record, "1234", SALT, 999) == "malformed"
    assert reason(TechAuth, KID, rec[:-1]) == "malformed"
    assert reason(TechAuth, KID, b"\x02" + rec[1:]) == "malformed"
    assert reason(TechAuth, KID, b"\x01\x00\x01" + rec[3:]) == "malformed"  # 1 iteration


def test_pin_login_and_session():
    a = auth()
    assert not a.authenticated(T0) and a.method is None
    assert reason(a.require, T0) == "no_session"
    a.login_pin("123456", T0)
    assert a.authenticated(T0) and a.method == "pin"
    a.require(T0 + 299)  # activity: the session now runs to T0 + 299 + 300
    assert a.authenticated(T0 + 598)
    assert not a.authenticated(T0 + 599)  # 300 s without activity
    assert reason(a.require, T0 + 599) == "no_session"
    a.login_pin("123456", T0 + 600)
    a.logout()
    assert not a.authenticated(T0 + 600)
    s = auth(session_s=60)
    s.login_pin("123456", T0)
    assert s.authenticated(T0 + 59) and not s.authenticated(T0 + 60)


def test_challenge_response():
    a = auth()
    assert reason(a.respond, bytes(32), T0) == "no_challenge"
    assert a.challenge(NONCE, T0) == NONCE.hex()
    answer = techauth.challenge_response(KEY, NONCE, KID)
    # HMAC-SHA256(KEY, NONCE || KID), from CPython's hmac module
    assert answer.hex() == "ff43f041b5442a455f8e0e714cde9837ccce42fdd35f7d1f5f1ddb072a2427b0", answer.hex()
    a.respond(answer.hex(), T0 + 5)  # as typed at the console
    assert a.authenticated(T0 + 5) and a.method == "challenge"
    assert reason(a.respond, answer, T0 + 6) == "no_challenge"  # used up
    a.logout()
    a.challenge(NONCE, T0 + 10)
    assert reason(a.respond, "zz" * 32, T0 + 11) == "malformed"  # typo: challenge kept, no failure
    assert reason(a.respond, answer[:31], T0 + 11) == "malformed"
    assert a.failures == 0
    a.respond(answer, T0 + 12)
    # answers are bound to the device and the nonce
    a.challenge(NONCE, T0 + 20)
    assert reason(a.respond, techauth.challenge_response(KEY, NONCE, bytes(8)), T0 + 21) == "bad_response"
    a.challenge(bytes(16), T0 + 22)
    assert reason(a.respond, answer, T0 + 23) == "bad_response"
    # a challenge lapses after CHALLENGE_S
    a.challenge(NONCE, T0 + 30)
    assert reason(a.respond, answer, T0 + 30 + techauth.CHALLENGE_S) == "no_challenge"
    assert reason(a.challenge, b"short", T0) == "malformed"


def test_not_configured():
    pin_only = TechAuth(KID, techauth.make_pin_record("1234", SALT))
    assert reason(pin_only.challenge, NONCE, T0) == "not_configured"
    assert reason(pin_only.respond, bytes(32), T0) == "not_configured"
    key_only = TechAuth(KID, tech_key=KEY)
    assert reason(key_only.login_pin, "1234", T0) == "not_configured"
    assert reason(TechAuth, KID, None, b"short key") == "malformed"
    assert reason(TechAuth, b"kid", None, KEY) == "malformed"
    assert reason(TechAuth, KID, None, KEY, 5) == "malformed"


def test_lockout_doubles_across_both_methods():
    a = auth()
    assert reason(a.login_pin, "000000", T0) == "bad_pin"
    a.challenge(NONCE, T0)
    assert reason(a.respond, bytes(32), T0) == "bad_response"
    assert a.locked_for(T0) == 0 and a.failures == 2
    e = raises(AuthError, a.login_pin, "000000", T0)  # the third failure locks
    assert (e.reason, e.seconds) == ("bad_pin", 30), (e.reason, e.seconds)
    e = raises(AuthError, a.login_pin, "123456", T0 + 29)  # even the right PIN
    assert (e.reason, e.seconds) == ("locked", 1) and "1 s" in str(e), str(e)
    assert reason(a.challenge, NONCE, T0 + 29) == "locked"
    t = T0 + 30
    for want in (60, 120, 240, 480, 960, 1920, 3600, 3600):
        e = raises(AuthError, a.login_pin, "000000", t)
        assert (e.reason, e.seconds) == ("bad_pin", want), (want, e.seconds)
        assert a.locked_for(t) == want
        t += want
    assert a.failures == 11
    a.login_pin("123456", t)  # a success clears the count
    assert a.failures == 0 and a.locked_for(t) == 0
    assert reason(a.login_pin, "000000", t) == "bad_pin"
    assert a.locked_for(t) == 0


def test_malformed_attempts_do_not_count():
    a = auth()
    for _ in range(5):
        assert reason(a.login_pin, "12", T0) == "malformed"
        assert reason(a.respond, bytes(32), T0) == "no_challenge"
    assert a.failures == 0


def test_lockout_survives_a_reboot():
    a = auth()
    for t in (T0, T0, T0, T0 + 30):
        assert reason(a.login_pin, "000000", t) == "bad_pin"
    assert a.locked_for(T0 + 40) == 50
    saved = a.state(T0 + 40)
    assert saved == b"\x01\x04\x00\x32", saved
    # the new boot's clock starts again from 5
    b = auth()
    b.restore(saved, 5)
    assert b.failures == 4 and b.locked_for(5) == 50
    assert reason(b.login_pin, "123456", 54) == "locked"
    b.login_pin("123456", 55)
    assert b.state(55) == b"\x01\x00\x00\x00"
    # torn or foreign bytes: malformed, and locked as a third failure would
    for bad in (b"", b"\x01\x04\x00", b"\x02\x00\x00\x00", b"\x01\x00\x10\x00", None):
        c = auth()
        assert reason(c.restore, bad, 5) == "malformed", bad
        assert c.failures == 3 and c.locked_for(5) == 30, bad


def test_clock_going_back_stands_still():
    a = auth()
    for _ in range(3):
        raises(AuthError, a.login_pin, "000000", T0)
    assert a.locked_for(T0 - 500) == 30  # as if still T0
    assert reason(a.login_pin, "123456", T0 + 29) == "locked"
    a.login_pin("123456", T0 + 30)
    raises(TypeError, a.locked_for, 1.5)


def test_fuzzed_answers_and_states():
    rng = Xorshift32(5150)
    a = TechAuth(KID, tech_key=KEY)
    for i in range(iterations(200)):
        a.failures = 0
        a.challenge(NONCE, T0)
        junk = noise(rng, rng.below(40))
        answer = junk if i % 2 else junk.hex()
        r = reason(a.respond, answer, T0)
        assert r in ("malformed", "bad_response"), r
    for i in range(iterations(200)):
        b = TechAuth(KID, tech_key=KEY)
        data = noise(rng, rng.below(6))
        try:
            b.restore(data, T0)
        except AuthError as e:
            assert e.reason == "malformed" and b.locked_for(T0) == 30, (data, e)
            continue
        assert b.failures == data[1] and b.locked_for(T0) == data[2] << 8 | data[3], data
