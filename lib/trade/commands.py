# The gate every remote COMMAND passes before it may touch a target
# (docs/control.md). admit() takes the raw bytes of the device's `in` topic
# and returns a Command, or raises CommandRejected with one reason:
#
#   oversize       over messages.MAX_MESSAGE bytes, refused before decoding
#   malformed      not a message this protocol version can read
#   unknown_key    signed with a kid that is not one of the hub's keys
#   signature      the hub's kid, but the signature does not verify
#   not_command    a valid hub message of another type (TRADE, ACK, ...)
#   wrong_target   addressed to another device
#   replay         seq not above the last accepted COMMAND's seq
#   window         valid_until <= valid_from, or a window over MAX_WINDOW_S
#   actuator       an action this actuator does not take
#   value          outside the physical range of that actuator
#   not_yet_valid  now < valid_from, or ts more than MAX_SKEW_S ahead
#   expired        now >= valid_until, or ts more than MAX_SKEW_S old
#
# Checked in that order. Only an accepted command moves last_seq, so a
# forged, foreign or refused message never changes what a later genuine
# command needs. Sequence numbers are strictly increasing, with no window:
# a command is a state change, and taking an older one after a newer one
# would undo the newer. The firmware persists last_seq before it applies
# the command, so a reboot cannot apply it twice.
#
# An accepted command only proposes a target; the safety envelope
# (lib/envelope.py) still applies every limit and relay dwell.
import cose
import p256
from trade import messages, replay

MAX_SKEW_S = 300  # docs/protocol.md section 6
MAX_WINDOW_S = 3600

# Actuators (the COMMAND's field 8), as docs/protocol.md numbers them.
BATTERY = 0
EV_CHARGER = 1
GRID = 2  # the site's grid connection

# Actions (field 7)
SETPOINT = 0
RELAY = 1
DEMAND_RESPONSE = 2

# What an accepted command sets (Command.kind): the first two are the
# names of envelope.Targets' fields.
BATTERY_W = "battery_w"
EV_MA = "ev_ma"
BATTERY_RELAY = "battery_relay"
EV_RELAY = "ev_relay"
IMPORT_LIMIT_W = "import_limit_w"

# (action, actuator, kind, lowest, highest value): the only combinations
# taken. Ranges are physical, not the site's limits: 50 kW is the
# envelope's highest battery_max_w, 32 A the EV contactor's rating.
ACTUATORS = (
    (SETPOINT, BATTERY, BATTERY_W, -50000, 50000),
    (SETPOINT, EV_CHARGER, EV_MA, 0, 32000),
    (RELAY, BATTERY, BATTERY_RELAY, 0, 1),
    (RELAY, EV_CHARGER, EV_RELAY, 0, 1),
    (DEMAND_RESPONSE, GRID, IMPORT_LIMIT_W, 0, 200000),
)

REASONS = ("oversize", "malformed", "unknown_key", "signature", "not_command", "wrong_target",
           "replay", "window", "actuator", "value", "not_yet_valid", "expired")

_MAX_SEQ = messages.U64


class CommandRejected(ValueError):
    # reason: one of REASONS
    def __init__(self, reason, detail=""):
        super().__init__("%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason


class GateConfigError(ValueError):
    # A bad my_kid, hub key or last_seq given to CommandGate.
    reason = "config"


class Command:
    # An accepted COMMAND. kind: one of the kinds above; value: W or mA for
    # a setpoint or limit, 0 (open) / 1 (closed) for a relay. It applies
    # while valid_from <= now < valid_until (active()), then lapses.
    def __init__(self, action, actuator, kind, value, seq, ts, valid_from, valid_until):
        self.action = action
        self.actuator = actuator
        self.kind = kind
        self.value = value
        self.seq = seq
        self.ts = ts
        self.valid_from = valid_from
        self.valid_until = valid_until

    def active(self, now_s):
        return self.valid_from <= now_s < self.valid_until

    def __repr__(self):
        return "<Command seq %d %s=%d until %d>" % (self.seq, self.kind, self.value, self.valid_until)


def _kid(kid, what):
    if not isinstance(kid, bytes) or len(kid) != 8:
        raise GateConfigError("%s must be 8 bytes" % what)
    return kid


class CommandGate:
    # my_kid: this device's kid. hub_keys: {kid: (x, y)}, the hub's public
    # keys (more than one while the hub rolls its key); each kid must be
    # the key's device id. last_seq: the persisted seq of the last accepted
    # COMMAND (0 on a new device).
    def __init__(self, my_kid, hub_keys, last_seq=0):
        self._my_kid = _kid(my_kid, "my_kid")
        if not isinstance(hub_keys, dict) or not hub_keys:
            raise GateConfigError("hub_keys must be a non-empty {kid: (x, y)} dict")
        keys = {}
        for kid in hub_keys:
            _kid(kid, "a hub kid")
            pub = hub_keys[kid]
            try:
                x, y = pub
                p256.check_public(x, y)
            except (TypeError, ValueError) as e:  # p256.SignatureError is a ValueError
                raise GateConfigError("hub key %s: %s" % (kid.hex(), e))
            if cose.device_id(x, y) != kid:
                raise GateConfigError("hub kid %s is not the device id of its key" % kid.hex())
            keys[kid] = (x, y)
        self._hub_keys = keys
        if isinstance(last_seq, bool) or not isinstance(last_seq, int) or not 0 <= last_seq <= _MAX_SEQ:
            raise GateConfigError("last_seq must be 0..2^64-1, got %r" % (last_seq,))
        self._last_seq = last_seq
        self._asked = None  # the kid the last verification looked up
        self._counts = [0] * (len(REASONS) + 1)  # the last one: accepted

    @property
    def last_seq(self):
        return self._last_seq

    def counts(self):
        # {reason: refusals} for every reason, and "accepted"
        out = {"accepted": self._counts[-1]}
        for i in range(len(REASONS)):
            out[REASONS[i]] = self._counts[i]
        return out

    def _lookup(self, kid):
        self._asked = kid
        return self._hub_keys.get(kid)

    def admit(self, data, now_s):
        # Raw bytes from the `in` topic and the device's clock (unix s) ->
        # Command, or CommandRejected.
        if isinstance(now_s, bool) or not isinstance(now_s, int):
            raise TypeError("now_s must be an int (unix seconds)")
        try:
            cmd = self._admit(data, now_s)
        except CommandRejected as e:
            self._counts[REASONS.index(e.reason)] += 1
            raise
        self._last_seq = cmd.seq
        self._counts[-1] += 1
        return cmd

    def _admit(self, data, now_s):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CommandRejected("malformed", "not bytes")
        if len(data) > messages.MAX_MESSAGE:
            raise CommandRejected("oversize", "%d bytes, at most %d" % (len(data), messages.MAX_MESSAGE))
        self._asked = None
        try:
            msg = messages.open_signed(bytes(data), self._lookup)
        except messages.ProtocolError as e:
            if e.reason == "signature":
                raise CommandRejected("signature", str(e))
            if e.reason == "kid" and self._asked is not None and self._asked not in self._hub_keys:
                raise CommandRejected("unknown_key", "kid %s is not the hub's" % self._asked.hex())
            if e.reason == "size":
                raise CommandRejected("oversize", str(e))
            raise CommandRejected("malformed", str(e))
        if msg.type != messages.COMMAND:
            raise CommandRejected("not_command", "a %s" % msg.name)
        f = msg.fields
        if f["target"] != self._my_kid:
            raise CommandRejected("wrong_target", "for %s" % f["target"].hex())
        if msg.seq <= self._last_seq:
            raise CommandRejected("replay", "seq %d, last accepted %d" % (msg.seq, self._last_seq))
        start, until = f["valid_from"], f["valid_until"]
        if until <= start or until - start > MAX_WINDOW_S:
            raise CommandRejected("window", "[%d, %d) is not 1..%d s long" % (start, until, MAX_WINDOW_S))
        action, actuator, value = f["action"], f["actuator"], f["value"]
        for row in ACTUATORS:
            if row[0] == action and row[1] == actuator:
                break
        else:
            raise CommandRejected("actuator", "action %d on actuator %d" % (action, actuator))
        if not row[3] <= value <= row[4]:
            raise CommandRejected("value", "%s %d outside %d..%d" % (row[2], value, row[3], row[4]))
        try:
            replay.check_time(msg.ts, now_s, MAX_SKEW_S)
        except replay.ReplayError as e:
            raise CommandRejected("not_yet_valid" if e.reason == "future" else "expired", str(e))
        if now_s < start:
            raise CommandRejected("not_yet_valid", "valid from %d, now %d" % (start, now_s))
        if now_s >= until:
            raise CommandRejected("expired", "valid until %d, now %d" % (until, now_s))
        return Command(action, actuator, row[2], value, msg.seq, msg.ts, start, until)
