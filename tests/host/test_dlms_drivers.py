"""The firmware's DLMS push listener and the helpers both DLMS drivers share,
on CPython, fed with push frames captured from real meters
(tests/lib/push_vectors.py names each source): which body layouts map onto
quantities, which are refused as unknown, and invocation counters that
survive a reboot. The drivers on MicroPython against the simulator are in
tests/e2e/test_meters_dlms.py."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "firmware"))

from gateway.meters import dlms_common  # noqa: E402
from gateway.meters.dlms_common import Counters, quantity_of, to_quantity, triples  # noqa: E402
from gateway.meters.dlms_push import Driver  # noqa: E402
from push_vectors import (AIDON_FRAME, KAMSTRUP_AK, KAMSTRUP_EK, KAMSTRUP_FRAME, NOE_FRAMES,  # noqa: E402
                          NOE_KEY, h)

OWN_MARGIN = 1000  # the own invocation counters Counters reserves ahead (dlms_common's is const())


class Health:
    def __init__(self):
        self.errors = {}

    def count(self, kind, detail=""):
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Bus:
    char_us = 1042  # 9600 8N1

    def describe(self):
        return "9600 8N1"


class Service:
    def serial_line(self, cfg):
        return Bus()


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(dlms_common, "STATE_DIR", str(tmp_path))
    return tmp_path


def listener(framing, ek=None, ak=None, title=None):
    cfg = {"name": "ci", "uart": 2, "framing": framing, "period_s": 5,
           "ek": None if ek is None else h(ek), "ak": None if ak is None else h(ak),
           "system_title": None if title is None else h(title)}
    health = Health()
    return Driver(cfg, Service(), health), health


def feed(d, data):
    readings = []
    d._take(d._feed(data), readings.append)
    d._take(d._gap(), readings.append)
    return readings


def test_austrian_customer_interface_encrypted_without_tag():
    # Netz NOE example: M-Bus, SC 0x20 (no tag): taken only because no AK is configured
    d, health = listener("mbus", ek=NOE_KEY)
    (values,) = feed(d, h("".join(NOE_FRAMES)))
    assert values == {"energy_import_wh": 12937, "energy_export_wh": 0, "power_import_w": 0,
                      "power_export_w": 0, "power_w": 0, "voltage_l1_mv": 233700, "voltage_l2_mv": 0,
                      "voltage_l3_mv": 0, "current_l1_ma": 0, "current_l2_ma": 0, "current_l3_ma": 0,
                      "power_factor_permille": 1000}, values
    assert health.errors == {} and d.last[1] == 0x23, (health.errors, d.last)
    assert feed(d, h("".join(NOE_FRAMES))) == [] and health.errors == {"replay": 1}, health.errors
    # with an AK configured, the same untagged frame is refused
    d, health = listener("mbus", ek=NOE_KEY, ak=KAMSTRUP_AK)
    assert feed(d, h("".join(NOE_FRAMES))) == [] and health.errors == {"security": 1}, health.errors


def test_aidon_plain_structures_and_kamstrup_pairs_without_units():
    d, health = listener("hdlc")
    (values,) = feed(d, h(AIDON_FRAME))
    assert values["power_import_w"] == 17 and values["power_w"] == 17, values
    assert values["voltage_l1_mv"] == 237200 and values["voltage_l3_mv"] == 237900, values
    assert d.unmapped == 2, d.unmapped  # reactive power: no quantity for 3.7.0/4.7.0
    # Kamstrup sends OBIS-value pairs with no scaler_unit: not guessed, counted
    d, health = listener("hdlc", ek=KAMSTRUP_EK, ak=KAMSTRUP_AK, title="4B414D4501349083")
    assert feed(d, h(KAMSTRUP_FRAME)) == [] and health.errors == {"layout": 1}, health.errors
    assert d.skipped == 1 and d.last[1] == 0x010F60A4, d.last


def test_wrong_system_title_wrong_tag_and_broken_frames_are_counted():
    d, health = listener("hdlc", ek=KAMSTRUP_EK, ak=KAMSTRUP_AK, title="4B414D4500000000")
    assert feed(d, h(KAMSTRUP_FRAME)) == [] and health.errors == {"security": 1}, health.errors
    frame = bytearray(h(KAMSTRUP_FRAME))
    frame[-10] ^= 1  # inside the GCM tag: the FCS no longer fits either
    d, health = listener("hdlc", ek=KAMSTRUP_EK, ak=KAMSTRUP_AK)
    assert feed(d, bytes(frame)) == [] and health.errors == {"crc": 1}, health.errors
    d, health = listener("raw")
    assert feed(d, h(AIDON_FRAME)[12:-3]) != [] and health.errors == {}, health.errors  # the bare APDU
    assert feed(d, b"\x0f\x00") == [] and health.errors == {"frame": 1}, health.errors


def test_body_layouts_and_units():
    su = [-1, 35]
    ln = h("0100200700FF")
    flat = [h("07E5091B01092F0F00FF8880"), ln, 2301, su, h("0100010800FF"), 5, [3, 30]]
    assert triples(flat, []) == [(ln, 2301, -1, 35), (h("0100010800FF"), 5, 3, 30)]
    assert triples([[ln, 2301, su], [ln, "text"], [[ln, 7, su]]], []) == [(ln, 2301, -1, 35), (ln, 7, -1, 35)]
    assert triples([ln, 2301, ln, 7], []) == []  # pairs: no unit, no guess
    assert triples([ln, True, su], []) == [] and triples([ln, 1, [300, 35]], []) == []
    assert quantity_of(h("0101010800FF")) == "energy_import_wh"  # B=1: the meter's own channel
    assert quantity_of(h("0100010801FF")) is None and quantity_of(h("01000108006E")) is None
    assert to_quantity("voltage_l1_mv", 2301, -1, 35) == 230100
    assert to_quantity("energy_import_wh", 12, 3, 30) == 12000 and to_quantity("energy_import_wh", 5, 0, 27) is None
    assert to_quantity("frequency_mhz", 5001, -2, 44) == 50010 and to_quantity("power_w", 1, 0, 99) is None


def test_counters_survive_a_reboot(state_dir):
    c = Counters("grid")
    first = c.own_start()
    assert first == 0 and c.own == OWN_MARGIN
    assert c.reserve(500) and c.writes == 1  # well inside the reservation: no write
    assert c.reserve(OWN_MARGIN - 10)  # close to it: a new one, written first
    assert c.own == 2 * OWN_MARGIN - 10 and c.writes == 2
    title = h("5047570000BC614E")
    c.peer(title, 41)  # a new sender: written at once
    c.peer(title, 42)  # then at most once a minute ...
    assert Counters("grid").peers == {title: 41}
    c.flush()  # ... and on close
    again = Counters("grid")
    assert again.peers == {title: 42} and again.own_start() == c.own, again.own
    (state_dir / "dlms_bad.ic").write_text("own x\npeer zz 1\n")
    assert Counters("bad").own == 0  # unreadable: start at 0 (the meter refuses a reuse)


def test_no_request_without_a_persisted_reservation(state_dir, monkeypatch):
    c = Counters("grid")
    c.own_start()
    monkeypatch.setattr(c, "path", str(state_dir / "missing" / "dlms_grid.ic"))  # cannot be written
    assert c.reserve(10)  # still inside the reservation on flash
    assert not c.reserve(OWN_MARGIN - 10) and c.error, c.error
    assert c.own == OWN_MARGIN  # nothing assumed that is not on flash
