"""lib/techauth.py against CPython's hashlib.pbkdf2_hmac and hmac (CPython
only): PIN records and challenge answers built with the standard library
are what the device accepts, so a host tool may use either."""

import hashlib
import hmac
import os
import struct
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for sub in ("tests/lib", "lib"):
    path = os.path.join(ROOT, sub)
    if path not in sys.path:
        sys.path.insert(0, path)

import techauth  # noqa: E402

FUZZ = settings(max_examples=200, deadline=None)
KID = bytes.fromhex("ccae1d86cce066af")


@FUZZ
@given(st.binary(max_size=100), st.binary(max_size=80), st.integers(1, 300))
def test_pbkdf2_matches_hashlib(password, salt, iterations):
    want = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
    assert techauth.pbkdf2_sha256(password, salt, iterations) == want


@FUZZ
@given(st.binary(min_size=16, max_size=64), st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8))
def test_challenge_response_matches_hmac(key, nonce, kid):
    want = hmac.new(key, nonce + kid, hashlib.sha256).digest()
    assert techauth.challenge_response(key, nonce, kid) == want


@settings(max_examples=20, deadline=None)
@given(st.from_regex(r"\A[0-9]{4,12}\Z"), st.binary(min_size=16, max_size=16), st.integers(1000, 3000))
def test_stdlib_pin_record_logs_in(pin, salt, iterations):
    # the record as a host tool would write it with the standard library alone
    record = struct.pack(">BH", 1, iterations) + salt + \
        hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, iterations)
    assert techauth.make_pin_record(pin, salt, iterations) == record
    auth = techauth.TechAuth(KID, record)
    auth.login_pin(pin, 0)
    assert auth.authenticated(0)
    wrong = ("1" if pin[0] != "1" else "2") + pin[1:]
    try:
        auth.login_pin(wrong, 1)
    except techauth.AuthError as e:
        assert e.reason == "bad_pin"
    else:
        raise AssertionError("a wrong PIN logged in")


def test_stdlib_answer_logs_in():
    key = os.urandom(32)
    nonce = os.urandom(16)
    auth = techauth.TechAuth(KID, tech_key=key)
    shown = auth.challenge(nonce, 0)
    answer = hmac.new(key, bytes.fromhex(shown) + KID, hashlib.sha256).hexdigest()
    auth.respond(answer, 1)
    assert auth.method == "challenge"
