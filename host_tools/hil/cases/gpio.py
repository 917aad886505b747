"""Relays and the EV pilot under the safety envelope, observed on the
virtual board's GPIO channel, never from the firmware's own account.

The board half is the firmware's dispatcher adapter (gateway/control.py:
Control, lib/envelope, the board's real pins) with the grid meter's data
and the clock handed in, stepped one point at a time. The technician's
`ev` target (Control.set_manual, what the console's `ev MA` calls) asks
for a current; the host half set the pilot's feedback input (a car in
state C), and after each step reads what the relay and the pilot PWM did.
After each step the board toggles the status LED: a fence, so the host
knows every output change of the step has arrived before it looks.
"""

from host_tools.hil.case import GPIO, RAW_REPL, needs

ORDER = 30
PILOT_C = (6000 + 12000) * 65535 // 24000  # +6 V on the feedback divider: a vehicle charging
PAUSE = 65535  # constant +12 V: no charging

BOARD = """
import asyncio
from gateway import board as gboard
from gateway.control import Control
b = gboard.load()
class Mono:
    t = 0
    def ms(self):
        return Mono.t
class Grid:
    driver = None
    good_ticks = 0
    values = {}
    age = 0
    def age_ms(self, now):
        return self.age
GRID = Grid()
class Meters:
    def find(self, name):
        return GRID if name == "grid" else None
config = {"control": {"period_ms": 1000, "manual_s": 3600, "grid_meter": "grid", "battery_meter": None,
                      "ev_meter": None},
          "limits": {"fuse_a": 25, "fuse_margin_ma": 3000, "ev_max_a": 16, "battery_max_w": 0,
                     "relay_min_on_ms": 2000, "relay_min_off_ms": 2000, "stale_ms": 5000}}
c = Control(config, b, Meters(), Mono(), print)
hil.next("built")
hil.wait("car")
fence = [0]
def step(label, t, house_a, ev_ma, age=0):
    # the house draws house_a on each phase; the meter's data is age ms old
    GRID.values = {"power_w": 3 * 230 * house_a}
    for k in (1, 2, 3):
        GRID.values["current_l%d_ma" % k] = house_a * 1000
    GRID.age = age
    Mono.t = t
    c.set_manual("ev_ma", ev_ma)
    act = asyncio.run(c.step())
    fence[0] ^= 1
    b.set_active("status_led", fence[0])
    hil.set(label, [act.ev_ma, act.ev_duty_u16, 1 if act.ev_relay else 0, act.ev_reason, act.failsafe])
    hil.next(label)
    hil.wait(label)
step("within", 2500, 5, 10000)
step("over_the_fuse", 3000, 15, 32000)
step("stale", 3500, 5, 10000, age=6000)
step("dwell", 4000, 5, 10000)
step("after_dwell", 5600, 5, 10000)
b.failsafe()
"""


def duty(ma):
    # IEC 61851-1 below 51 A: duty = I / 0.6 A (lib/evse.duty_for_ma); an independent reckoning
    return ma * 65535 / 60000


@needs(RAW_REPL, GPIO)
def case_relay_and_pilot_stay_within_the_envelope(hil):
    """EV relay and pilot: 10 A granted; 32 A cut to the fuse; stale data opens at once; dwell holds"""
    ch = hil.target.channel
    half = hil.board_half()
    half.start(BOARD)
    half.next("built")
    ch.set_input("ev_pilot_feedback", PILOT_C)
    half.go("car")
    fence = [0]
    state = {}

    def observe(label):
        """-> (relay changes, pilot duties) of this step, read off the channel up to the fence."""
        mark = state.get("mark", 0)
        half.next(label)
        fence[0] ^= 1
        end = ch.wait_kind("out", role="status_led", value=fence[0], since=mark, timeout=10)
        events = ch.events[mark:ch.events.index(end)]
        state["mark"] = ch.events.index(end) + 1
        relay = [e["value"] for e in events if e.get("kind") == "out" and e.get("role") == "relay_ev_enable"]
        pwm = [e["duty_u16"] for e in events if e.get("kind") == "pwm" and e.get("role") == "ev_pilot_pwm"]
        order = [(e["kind"], e.get("value", e.get("duty_u16"))) for e in events
                 if e.get("role") in ("relay_ev_enable", "ev_pilot_pwm")]
        hil.log("%-14s board said %s; channel: relay %s, pilot duty %s"
                % (label, half.values[label], relay, pwm))
        return relay, pwm, order

    state["mark"] = ch.mark()
    relay, pwm, order = observe("within")  # 10 A with the house at 5 A a phase: granted
    assert ch.level("relay_ev_enable") == 1 and relay[-1:] == [1], relay
    assert pwm and abs(pwm[-1] - duty(10000)) <= 2, pwm
    offered = ("pwm", pwm[-1])
    assert order.index(("out", 1)) < order.index(offered), "the pilot offered current before the relay closed: %s" % order
    half.go("within")

    relay, pwm, _ = observe("over_the_fuse")  # 32 A asked, house at 15 A: 22 A - 15 A = 7 A left
    assert relay == [] and ch.level("relay_ev_enable") == 1, relay
    assert pwm and abs(pwm[-1] - duty(7000)) <= 2, (pwm, duty(7000))
    half.go("over_the_fuse")

    relay, pwm, _ = observe("stale")  # meter data 6 s old: fail-safe, though the relay closed 1 s ago
    assert relay == [0] and ch.level("relay_ev_enable") == 0, relay
    assert pwm and pwm[-1] == PAUSE, pwm
    half.go("stale")

    relay, pwm, _ = observe("dwell")  # fresh data again, 0.5 s after the opening: min_off holds it open
    assert relay == [] and ch.level("relay_ev_enable") == 0, relay
    assert all(p == PAUSE for p in pwm), pwm
    half.go("dwell")

    relay, pwm, _ = observe("after_dwell")  # 2.1 s after: closes, 10 A again
    assert relay == [1], relay
    assert pwm and abs(pwm[-1] - duty(10000)) <= 2, pwm
    half.go("after_dwell")
    half.done()
    assert ch.level("relay_ev_enable") == 0  # the board half left the outputs in their fail-safe state
