# What the DLMS pull and push drivers share: OBIS codes to quantities, values
# scaled by their scaler and unit, the shapes of push bodies, and invocation
# counters kept in /state across reboots.
import os

import quantities
from compat import const, ticks_diff, ticks_ms
from dlms import cosem

STATE_DIR = "/state"
_OWN_MARGIN = const(1000)  # own ICs reserved ahead of use, persisted before use
_SAVE_EVERY_MS = const(60000)  # peers' counters: at most one write a minute
_MAX_PEERS = const(8)
_MAX_DEPTH = const(3)

# DLMS unit codes (Blue Book 4.3.2) -> lib/quantities unit names
_UNITS = {27: "W", 28: "VA", 29: "var", 30: "Wh", 31: "VAh", 32: "varh", 33: "A", 35: "V",
          44: "Hz", 56: "%", 9: "degC", 255: "1"}


def obis_text(ln):
    return "%d-%d:%d.%d.%d*%d" % (ln[0], ln[1], ln[2], ln[3], ln[4], ln[5])


def quantity_of(ln):
    # 6-octet logical name -> quantity name, or None. F must be 255 (a
    # billing period is another value); electricity B 0 and 1 are both the
    # meter's own channel (Kamstrup sends 1-1:1.8.0 for 1-0:1.8.0).
    if len(ln) != 6 or ln[5] != 255:
        return None
    b = ln[1]
    if ln[0] == 1 and b == 1:
        b = 0
    text = "%d-%d:%d.%d.%d" % (ln[0], b, ln[2], ln[3], ln[4])
    return quantities.by_obis(text)


def to_quantity(name, value, scaler, unit):
    # A raw value with its scaler and DLMS unit code -> int in the quantity's
    # unit, or None when the unit does not fit the quantity (never a guess).
    u = _UNITS.get(unit)
    if u is None:
        return None
    e = _exponent(u, name)
    if e is None:
        return None
    try:
        return cosem.scale(value, scaler, -e)
    except ValueError:  # not a number (CosemError)
        return None


# (unit, quantity) -> power of ten, or None (another dimension): found once.
# quantities.exponent scans its tables with a temporary copy of them (1.3 KB),
# too much garbage for every value of every poll on a small heap.
_EXP = {}


def _exponent(u, name):
    key = (u, name)
    try:
        return _EXP[key]
    except KeyError:
        pass
    try:
        e = quantities.exponent(u, name)
    except ValueError:  # another dimension
        e = None
    if len(_EXP) < 64:  # bounded: a meter has a few dozen registers at most
        _EXP[key] = e
    return e


def derive(values):
    # power_w (import positive) from +P and -P when the meter has no 16.7.0
    if "power_w" not in values and "power_import_w" in values and "power_export_w" in values:
        values["power_w"] = values["power_import_w"] - values["power_export_w"]


def _is_ln(x):
    return isinstance(x, bytes) and len(x) == 6


def _is_num(x):
    t = type(x)
    return t is int or t is float


def _is_su(x):
    return (isinstance(x, list) and len(x) == 2 and type(x[0]) is int and type(x[1]) is int
            and -128 <= x[0] <= 127 and 0 <= x[1] <= 255)


def triples(body, out, depth=0):
    # Push body -> (logical name, value, scaler, unit) appended to out, from
    # the two layouts meters use: a flat structure "... LN, value,
    # {scaler, unit} ..." (Austrian and Luxembourg customer interfaces) and
    # structures {LN, value, {scaler, unit}} (Aidon HAN). Anything else,
    # LN-value pairs without a scaler_unit included, is not taken: a value
    # whose unit is not sent is not guessed.
    if not isinstance(body, list) or depth > _MAX_DEPTH:
        return out
    n = len(body)
    i = 0
    while i < n:
        x = body[i]
        if _is_ln(x) and i + 2 < n and _is_num(body[i + 1]) and _is_su(body[i + 2]):
            su = body[i + 2]
            out.append((x, body[i + 1], su[0], su[1]))
            i += 3
            continue
        if isinstance(x, list):
            if len(x) == 3 and _is_ln(x[0]) and _is_num(x[1]) and _is_su(x[2]):
                out.append((x[0], x[1], x[2][0], x[2][1]))
            else:
                triples(x, out, depth + 1)
        i += 1
    return out


class Counters:
    # Invocation counters of one meter in /state/dlms_<name>.ic, so a reboot
    # neither reuses our own counter (the meter would refuse the association,
    # and a reused counter reuses a GCM nonce) nor forgets the meter's (a
    # replayed frame from before the reboot would pass).
    #   own N          every own IC used so far is below N
    #   peer TITLE IC  the last IC accepted from that sender
    # Own: the next _OWN_MARGIN counters are reserved and the reservation
    # written before the first of them is used. Peers: written at most once
    # a minute and on close(); a replay of the last minute before a power
    # cut would pass once after it.
    def __init__(self, name):
        self.path = "%s/dlms_%s.ic" % (STATE_DIR, name)
        self.own = 0
        self.saved_own = 0  # the reservation known to be on flash
        self.peers = {}
        self.writes = 0
        self.error = None  # the last failed write
        self._dirty = False
        self._saved = ticks_ms()
        try:
            with open(self.path) as f:
                for line in f:
                    w = line.split()
                    if len(w) == 2 and w[0] == "own":
                        self.own = self.saved_own = int(w[1])
                    elif len(w) == 3 and w[0] == "peer" and len(w[1]) == 16 and len(self.peers) < _MAX_PEERS:
                        self.peers[bytes.fromhex(w[1])] = int(w[2])
        except (OSError, ValueError):
            pass  # none yet (or unreadable: the meter tells, by refusing us)

    def own_start(self):
        # -> the first own IC for this boot (every one below it may have been used)
        start = self.own
        self.reserve(start)
        return start

    def reserve(self, next_ic):
        # Before a request goes out with next_ic (and up to 63 after it):
        # -> True when a reservation on flash covers them. False when it
        # cannot be written: sending would risk reusing a GCM nonce after a
        # reboot, so the caller must not send.
        if next_ic + 64 < self.saved_own:
            return True
        old = self.own
        self.own = next_ic + _OWN_MARGIN
        if self.save():
            return True
        self.own = old
        return False

    def peer(self, title, ic):
        if title is None or ic is None or self.peers.get(title) == ic:
            return
        new = title not in self.peers
        if new and len(self.peers) >= _MAX_PEERS:
            return
        self.peers[title] = ic
        self._dirty = True
        if new or ticks_diff(ticks_ms(), self._saved) >= _SAVE_EVERY_MS:
            self.save()

    def flush(self):
        if self._dirty:
            self.save()

    def save(self):
        text = "own %d\n" % self.own
        for t in self.peers:
            text += "peer %s %d\n" % (t.hex(), self.peers[t])
        tmp = self.path + ".new"
        try:
            try:
                os.mkdir(STATE_DIR)
            except OSError:
                pass
            with open(tmp, "w") as f:
                f.write(text)
            os.rename(tmp, self.path)  # a power cut leaves the old file or the new one
        except OSError as e:
            self.error = str(e)
            return False
        self.saved_own = self.own
        self._dirty = False
        self._saved = ticks_ms()
        self.writes += 1
        self.error = None
        return True
