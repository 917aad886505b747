# Technician authentication for the local console (docs/control.md).
#
# Two ways in, one failure counter:
# - a PIN of 4-12 digits, stored only as a record of PBKDF2-HMAC-SHA256
#   (RFC 8018) with a random salt: make_pin_record();
# - challenge-response: the device shows a random 16-byte nonce, the
#   technician's tool answers HMAC-SHA256(technician key, nonce || kid)
#   (challenge_response(), the tool's side), valid once, for CHALLENGE_S.
# After _LOCK_AFTER failures in a row, each further failure locks both ways
# out for 30 s, doubling up to 1 h; a success clears the count. state() and
# restore() carry the count and the lock's remaining seconds across a
# reboot, so a power cycle never shortens a lock. A session lasts until
# session_s without activity or logout().
#
# Sans-I/O: the caller passes the nonce (os.urandom) and the time, now_s,
# any whole-seconds clock of this boot (monotonic is best); a clock that
# goes back counts as standing still.
from compat import const

import hmac_sha256

_LOCK_AFTER = const(3)
_FIRST_LOCK_S = const(30)
_MAX_LOCK_S = const(3600)
CHALLENGE_S = 300
_NONCE_LEN = const(16)
_ITERATIONS = const(1000)  # docs/control.md has the timing on an ESP32
_MIN_ITERATIONS = const(1000)
_SALT_LEN = const(16)
_PIN_MIN = const(4)
_PIN_MAX = const(12)
_RECORD_VERSION = const(1)
_RECORD_LEN = const(51)  # version, iterations (2), salt (16), PBKDF2 output (32)
_STATE_VERSION = const(1)
_STATE_LEN = const(4)  # version, failures, lock seconds left (2)
_MAX_FAILURES = const(255)


class AuthError(ValueError):
    # reason: "locked" (.seconds: how long the lock still holds),
    # "bad_pin", "bad_response", "no_challenge" (none asked, used or
    # expired), "not_configured" (no PIN record or technician key),
    # "no_session" (require() without a login), "malformed" (a PIN,
    # answer, nonce, record, key or state of the wrong form).
    def __init__(self, reason, detail="", seconds=0):
        super().__init__("%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason
        self.seconds = seconds


def pbkdf2_sha256(password, salt, iterations):
    # PBKDF2-HMAC-SHA256 (RFC 8018 section 5.2), one 32-byte block.
    prf = hmac_sha256.HmacSha256(password)
    u = prf.digest(salt, b"\x00\x00\x00\x01")
    acc = int.from_bytes(u, "big")
    for _ in range(iterations - 1):
        u = prf.digest(u)
        acc ^= int.from_bytes(u, "big")  # one bignum XOR: a byte loop is far slower on MicroPython
    return acc.to_bytes(32, "big")


def _pin_bytes(pin):
    if isinstance(pin, str):
        pin = pin.encode()
    if not isinstance(pin, bytes) or not _PIN_MIN <= len(pin) <= _PIN_MAX or \
            any(c < 0x30 or c > 0x39 for c in pin):
        raise AuthError("malformed", "a PIN is %d to %d digits" % (_PIN_MIN, _PIN_MAX))
    return pin


def make_pin_record(pin, salt, iterations=_ITERATIONS):
    # The stored form of a PIN (51 bytes); salt: 16 random bytes.
    pin = _pin_bytes(pin)
    if not isinstance(salt, bytes) or len(salt) != _SALT_LEN:
        raise AuthError("malformed", "salt must be %d bytes" % _SALT_LEN)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or \
            not _MIN_ITERATIONS <= iterations <= 0xFFFF:
        raise AuthError("malformed", "iterations must be %d..65535" % _MIN_ITERATIONS)
    return bytes((_RECORD_VERSION, iterations >> 8, iterations & 0xFF)) + salt + \
        pbkdf2_sha256(pin, salt, iterations)


def challenge_response(tech_key, nonce, kid):
    # The technician tool's answer to a challenge: 32 bytes.
    return hmac_sha256.hmac_sha256(tech_key, bytes(nonce) + bytes(kid))


def _parse_record(record):
    if not isinstance(record, bytes) or len(record) != _RECORD_LEN or record[0] != _RECORD_VERSION:
        raise AuthError("malformed", "not a PIN record")
    iterations = record[1] << 8 | record[2]
    if iterations < _MIN_ITERATIONS:
        raise AuthError("malformed", "PIN record with %d iterations" % iterations)
    return iterations, record[3:3 + _SALT_LEN], record[3 + _SALT_LEN:]


def _lock_s(failures):
    if failures < _LOCK_AFTER:
        return 0
    return min(_FIRST_LOCK_S << min(failures - _LOCK_AFTER, 7), _MAX_LOCK_S)


class TechAuth:
    # kid: this device's 8-byte id (bound into every answer). pin_record:
    # from make_pin_record(), or None; tech_key: 16-64 bytes, or None. A
    # method without its secret answers "not_configured".
    def __init__(self, kid, pin_record=None, tech_key=None, session_s=300):
        if not isinstance(kid, bytes) or len(kid) != 8:
            raise AuthError("malformed", "kid must be 8 bytes")
        if pin_record is not None:
            _parse_record(pin_record)
        if tech_key is not None and (not isinstance(tech_key, bytes) or not 16 <= len(tech_key) <= 64):
            raise AuthError("malformed", "the technician key must be 16 to 64 bytes")
        if isinstance(session_s, bool) or not isinstance(session_s, int) or not 10 <= session_s <= 86400:
            raise AuthError("malformed", "session_s must be 10..86400")
        self._kid = kid
        self._pin_record = pin_record
        self._tech_key = tech_key
        self.session_s = session_s
        self.failures = 0  # in a row, both methods
        self._locked_until = 0
        self._nonce = None
        self._nonce_until = 0
        self._session = None  # "pin" or "challenge" while logged in
        self._active_s = 0  # the session's last activity
        self._last_now = 0

    def _now(self, now_s):
        if isinstance(now_s, bool) or not isinstance(now_s, int):
            raise TypeError("now_s must be an int")
        if now_s > self._last_now:
            self._last_now = now_s
        return self._last_now

    def locked_for(self, now_s):
        # Seconds the lock still holds (0: not locked).
        return max(0, self._locked_until - self._now(now_s))

    def _check_lock(self, now):
        left = self._locked_until - now
        if left > 0:
            raise AuthError("locked", "try again in %d s" % left, left)

    def _fail(self, now, reason, detail):
        self.failures = min(self.failures + 1, _MAX_FAILURES)
        lock = _lock_s(self.failures)
        if lock:
            self._locked_until = now + lock
            detail += "; locked for %d s" % lock
        raise AuthError(reason, detail, lock)

    def _succeed(self, now, method):
        self.failures = 0
        self._locked_until = 0
        self._nonce = None
        self._session = method
        self._active_s = now

    def login_pin(self, pin, now_s):
        now = self._now(now_s)
        if self._pin_record is None:
            raise AuthError("not_configured", "no PIN is set")
        self._check_lock(now)
        pin = _pin_bytes(pin)
        iterations, salt, want = _parse_record(self._pin_record)
        if not hmac_sha256.equal(pbkdf2_sha256(pin, salt, iterations), want):
            self._fail(now, "bad_pin", "wrong PIN")
        self._succeed(now, "pin")

    def challenge(self, nonce, now_s):
        # nonce: _NONCE_LEN fresh random bytes -> the hex the console shows.
        # It replaces any earlier challenge.
        now = self._now(now_s)
        if self._tech_key is None:
            raise AuthError("not_configured", "no technician key is set")
        self._check_lock(now)
        if not isinstance(nonce, bytes) or len(nonce) != _NONCE_LEN:
            raise AuthError("malformed", "the nonce must be %d bytes" % _NONCE_LEN)
        self._nonce = nonce
        self._nonce_until = now + CHALLENGE_S
        return nonce.hex()

    def respond(self, answer, now_s):
        # answer: 32 bytes or 64 hex digits. Right or wrong, it uses up the
        # challenge; one of the wrong form does not.
        now = self._now(now_s)
        if self._tech_key is None:
            raise AuthError("not_configured", "no technician key is set")
        self._check_lock(now)
        if self._nonce is None or now >= self._nonce_until:
            self._nonce = None
            raise AuthError("no_challenge", "ask for a challenge first")
        if isinstance(answer, str):
            try:
                answer = bytes.fromhex(answer)
            except ValueError:
                raise AuthError("malformed", "the answer is not hex")
        if not isinstance(answer, bytes) or len(answer) != 32:
            raise AuthError("malformed", "the answer must be 32 bytes (64 hex digits)")
        want = challenge_response(self._tech_key, self._nonce, self._kid)
        self._nonce = None
        if not hmac_sha256.equal(answer, want):
            self._fail(now, "bad_response", "wrong answer")
        self._succeed(now, "challenge")

    @property
    def method(self):
        # How the current session logged in ("pin", "challenge"), or None.
        return self._session

    def authenticated(self, now_s):
        # True while a session is open; does not count as activity.
        now = self._now(now_s)
        if self._session is not None and now - self._active_s >= self.session_s:
            self._session = None
        return self._session is not None

    def require(self, now_s):
        # For a command that needs a technician: raises AuthError
        # ("no_session") without a session, else counts as activity.
        if not self.authenticated(now_s):
            raise AuthError("no_session", "log in first (auth pin, or auth challenge)")
        self._active_s = self._last_now

    def logout(self):
        self._session = None
        self._nonce = None

    def state(self, now_s):
        # The failure count and the lock's remaining seconds, to persist
        # after every attempt (4 bytes).
        left = self.locked_for(now_s)
        return bytes((_STATE_VERSION, self.failures, left >> 8, left & 0xFF))

    def restore(self, data, now_s):
        # state() bytes from before a reboot; the lock runs again from now.
        # Bytes of the wrong form raise AuthError("malformed") after locking
        # as a _LOCK_AFTER-th failure would: a torn write cannot unlock.
        now = self._now(now_s)
        if not isinstance(data, bytes) or len(data) != _STATE_LEN or data[0] != _STATE_VERSION or \
                (data[2] << 8 | data[3]) > _MAX_LOCK_S:
            self.failures = max(self.failures, _LOCK_AFTER)
            self._locked_until = max(self._locked_until, now + _lock_s(self.failures))
            raise AuthError("malformed", "not a saved authentication state")
        self.failures = data[1]
        self._locked_until = now + (data[2] << 8 | data[3])
