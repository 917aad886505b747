# The technician's login on the console (lib/techauth, docs/control.md).
# The PIN record and the technician key are files in /state; so is the
# failure count with the lock, written after every attempt, so a reboot
# never shortens a lock.
import os

from compat import const
from gateway.boot import write_atomic
from techauth import AuthError, TechAuth, make_pin_record
from techconsole import ConsoleError

# in gateway.boot.STATE_DIR, spelt out: const() folds no concatenation
_PIN_PATH = const("/state/tech.pin")  # make_pin_record() bytes
_KEY_PATH = const("/state/tech.key")  # 16-64 bytes, for challenge-response (pgw provision)
_STATE_PATH = const("/state/tech.state")


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


class Technician:
    def __init__(self, kid, mono, log=print):
        self.mono = mono
        self.log = log
        pin, key = _read(_PIN_PATH), _read(_KEY_PATH)
        # An unreadable record must not open the console: PIN logins fail,
        # and a new PIN needs a challenge-response login first.
        self.pin_broken = False
        try:
            self.auth = TechAuth(kid, pin, key)
        except AuthError:
            self.pin_broken = pin is not None
            try:
                self.auth = TechAuth(kid, None, key)
            except AuthError:
                self.auth = TechAuth(kid)
        self.has_pin = pin is not None
        saved = _read(_STATE_PATH)
        if saved is not None:
            try:
                self.auth.restore(saved, self.now())
            except AuthError:
                pass  # restore() has locked as a failure would
        self.kid = kid

    def now(self):
        return self.mono.ms() // 1000

    def _save(self):
        write_atomic(_STATE_PATH, self.auth.state(self.now()))

    def require(self):
        # For a command that changes something: ConsoleError without a login.
        try:
            self.auth.require(self.now())
        except AuthError as e:
            raise ConsoleError(str(e))

    def logged_in(self):
        return self.auth.authenticated(self.now())

    def cmd_auth(self, what="status", arg=None):
        a, now = self.auth, self.now()
        if what == "status":
            if a.authenticated(now):
                return "logged in (%s)" % a.method
            left = a.locked_for(now)
            return "not logged in%s; pin %s" % (", locked for %d s" % left if left else "",
                                                "unreadable" if self.pin_broken else "set" if self.has_pin else "not set")
        if what == "logout":
            a.logout()
            return "logged out"
        try:
            if what == "pin":
                if arg is None:
                    raise ConsoleError("usage: auth pin <digits>")
                try:
                    a.login_pin(arg, now)
                finally:
                    self._save()
                self.log("auth: technician logged in (pin)")
                return "logged in for %d s of inactivity" % a.session_s
            if what == "challenge":
                return "nonce %s: answer with auth respond <hex>" % a.challenge(os.urandom(16), now)
            if what == "respond":
                try:
                    a.respond(arg or "", now)
                finally:
                    self._save()
                self.log("auth: technician logged in (challenge)")
                return "logged in for %d s of inactivity" % a.session_s
            # setpin: a first PIN needs nobody; changing one needs a login
            if self.has_pin or self.pin_broken:
                self.require()
            if arg is None or not 4 <= len(arg) <= 12 or not arg.isdigit():
                raise ConsoleError("a PIN is 4 to 12 digits")
            record = make_pin_record(arg, os.urandom(16))
            write_atomic(_PIN_PATH, record)
            self.auth = TechAuth(self.kid, record, _read(_KEY_PATH), a.session_s)
            self.has_pin, self.pin_broken = True, False
            self.log("auth: PIN set")
            return "PIN set; log in with auth pin <digits>"
        except AuthError as e:
            raise ConsoleError(str(e))
