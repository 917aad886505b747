# The board definition the host deployed as /board.json: named pin roles
# mapped to this board's GPIOs, and each actuator's fail-safe state.
import json

from machine import PWM, Pin

from compat import const

PATH = "/board.json"

# Outputs that move power: these are driven inactive before anything else.
_RELAYS = const(("relay_battery", "relay_ev_enable"))
_PILOT_HZ = const(1000)
_PILOT_IDLE_DUTY = const(65535)  # constant +12 V on the control pilot: no EV may charge


class BoardError(Exception):
    pass


class Board:
    def __init__(self, spec):
        self.name = spec["board"]
        self.title = spec.get("title", self.name)
        self.heap_kb = spec.get("heap_kb", 0)
        self.pins = spec["pins"]
        self.buses = spec.get("buses", {})
        self._outputs = {}

    def has(self, role):
        return role in self.pins

    def gpio(self, role):
        try:
            return self.pins[role]["gpio"]
        except KeyError:
            raise BoardError("board %s has no pin role %r" % (self.name, role))

    def output(self, role):
        # The Pin for an output role, created once, starting inactive.
        pin = self._outputs.get(role)
        if pin is None:
            inactive = 1 if self.pins[role].get("active_low") else 0
            pin = Pin(self.gpio(role), Pin.OUT, value=inactive)
            self._outputs[role] = pin
        return pin

    def set_active(self, role, on):
        active_low = self.pins[role].get("active_low", False)
        self.output(role).value((1 if on else 0) ^ (1 if active_low else 0))

    def input_active(self, role):
        spec = self.pins[role]
        pull = {"up": Pin.PULL_UP, "down": Pin.PULL_DOWN}.get(spec.get("pull"), -1)
        pin = Pin(spec["gpio"], Pin.IN, pull)
        return pin.value() ^ (1 if spec.get("active_low") else 0) == 1

    def failsafe(self):
        # Relays open, the EV pilot at its no-charge level, LED off.
        for role in _RELAYS:
            if self.has(role):
                self.set_active(role, False)
        if self.has("ev_pilot_pwm"):
            PWM(Pin(self.gpio("ev_pilot_pwm")), freq=_PILOT_HZ, duty_u16=_PILOT_IDLE_DUTY)
        if self.has("status_led"):
            self.set_active("status_led", False)


def load(path=PATH):
    try:
        with open(path) as f:
            spec = json.load(f)
    except OSError:
        raise BoardError("no %s: deploy with `pgw deploy --board NAME`" % path)
    except ValueError:
        raise BoardError("%s is not valid JSON" % path)
    if spec.get("schema") != 1:
        raise BoardError("%s has schema %r; this firmware reads schema 1" % (path, spec.get("schema")))
    return Board(spec)
