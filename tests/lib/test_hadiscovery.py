# lib/hadiscovery.py: Home Assistant MQTT discovery. Topic layout, keys and
# device/state classes as the HA docs give them (MQTT integration,
# "Discovery"; sensor "Device class" and "State class" tables).
import json

from mpcompat import raises

import hadiscovery as ha
from hadiscovery import DiscoveryError
from trade import topics

KID_HEX = "ccae1d86cce066af"  # the protocol vectors' device
KID = bytes.fromhex(KID_HEX)
NODE = "pgw_" + KID_HEX

# object_id: (unit, device_class, state_class)
WANT = {
    "power": ("W", "power", "measurement"),
    "energy_import": ("Wh", "energy", "total_increasing"),
    "energy_export": ("Wh", "energy", "total_increasing"),
    "battery": ("%", "battery", "measurement"),
    "ev_current": ("A", "current", "measurement"),
    "trade_balance": ("EUR", "monetary", "total"),
}


def parsed(**kw):
    return [(t, json.loads(p)) for t, p in ha.configs(KID_HEX, "elm-street", **kw)]


def test_config_topics_and_entities():
    got = parsed(version="0.1.0")
    assert len(got) == len(WANT), len(got)
    ids = []
    for topic, c in got:
        parts = topic.split("/")
        assert parts[0] == "homeassistant" and parts[1] == "sensor" and parts[2] == NODE, topic
        assert parts[4] == "config" and len(parts) == 5, topic
        unit, device_class, state_class = WANT[parts[3]]
        assert (c["unit_of_measurement"], c["device_class"], c["state_class"]) == \
            (unit, device_class, state_class), (topic, c)
        assert c["unique_id"] == NODE + "_" + parts[3], c["unique_id"]
        assert c["state_topic"] == ha.state_topic(KID_HEX) == "homeassistant/sensor/%s/state" % NODE
        assert c["availability_topic"] == topics.device("elm-street", KID, "status")
        assert c["availability_topic"] == "pgw/1/elm-street/dev/%s/status" % KID_HEX
        assert (c["payload_available"], c["payload_not_available"]) == ("online", "offline")
        assert c["has_entity_name"] is True and c["name"]
        assert c["device"] == got[0][1]["device"], c["device"]
        assert c["origin"] == {"name": "pgw", "sw_version": "0.1.0"}, c["origin"]
        ids.append(c["unique_id"])
    assert len(set(ids)) == len(ids)
    assert got[0][1]["device"] == {"identifiers": [NODE], "name": "Prosumer Gateway",
                                   "manufacturer": "Prosumer Gateway", "model": "pgw",
                                   "sw_version": "0.1.0"}, got[0][1]["device"]


def test_config_options():
    got = parsed(prefix="ha", name="Garage gateway", model="esp32-s3", currency="CHF")
    for topic, c in got:
        assert topic.startswith("ha/sensor/%s/" % NODE), topic
        assert c["state_topic"] == "ha/sensor/%s/state" % NODE
        assert c["device"]["name"] == "Garage gateway" and c["device"]["model"] == "esp32-s3"
        assert "sw_version" not in c["device"] and c["origin"] == {"name": "pgw"}
    assert [c for t, c in got if c["device_class"] == "monetary"][0]["unit_of_measurement"] == "CHF"


def test_value_templates():
    # the templates are plain Jinja; HA renders a null value as "None" (unknown)
    t = dict((json.loads(p)["unique_id"][len(NODE) + 1:], json.loads(p)["value_template"])
             for _, p in ha.configs(KID_HEX, "elm-street"))
    assert t["power"] == "{{ value_json.power_w }}", t["power"]
    assert t["energy_import"] == "{{ value_json.import_wh }}"
    assert t["energy_export"] == "{{ value_json.export_wh }}"
    assert t["battery"] == "{{ value_json.soc_pct }}"
    assert t["ev_current"] == "{{ none if value_json.ev_ma is none else value_json.ev_ma / 1000 }}"
    assert t["trade_balance"] == \
        "{{ none if value_json.balance is none else value_json.balance / 1000000 }}"


def test_state_payload():
    doc = json.loads(ha.state(-1200, 12345678, 8765432, 57, 16000, -1980000))
    assert doc == {"power_w": -1200, "import_wh": 12345678, "export_wh": 8765432, "soc_pct": 57,
                   "ev_ma": 16000, "balance": -1980000}, doc
    doc = json.loads(ha.state(power_w=300))
    assert doc == {"power_w": 300, "import_wh": None, "export_wh": None, "soc_pct": None,
                   "ev_ma": None, "balance": None}, doc
    big = json.loads(ha.state(import_wh=(1 << 64) - 1))
    assert big["import_wh"] == (1 << 64) - 1
    for kw in ({"soc_pct": 101}, {"soc_pct": -1}, {"power_w": 1.5}, {"ev_ma": -1},
               {"import_wh": True}, {"balance": "1"}, {"power_w": 1 << 31}):
        e = raises(DiscoveryError, ha.state, **kw)
        assert e.reason == "value" and e.key == list(kw)[0], (kw, e.key)


def test_removals():
    got = ha.removals(KID_HEX)
    assert [t for t, _ in got] == [t for t, _ in ha.configs(KID_HEX, "x")]
    assert all(p == b"" for _, p in got)


def test_bad_arguments():
    for bad in ("CCAE1D86CCE066AF", "ccae1d86", KID, "ccae1d86cce066ag"):
        assert raises(DiscoveryError, ha.configs, bad, "elm-street").reason == "kid", bad
    assert raises(DiscoveryError, ha.configs, KID_HEX, "Elm Street").reason == "community"
    for prefix in ("", "a/+", "#", "/ha", "ha/"):
        assert raises(DiscoveryError, ha.configs, KID_HEX, "x", prefix).reason == "prefix", prefix
        assert raises(DiscoveryError, ha.removals, KID_HEX, prefix).reason == "prefix", prefix
    assert raises(DiscoveryError, ha.configs, KID_HEX, "x", name="").reason == "text"
    assert raises(DiscoveryError, ha.configs, KID_HEX, "x", version=1).reason == "text"
    assert raises(DiscoveryError, ha.configs, KID_HEX, "x", currency="euro").reason == "text"
    assert raises(DiscoveryError, ha.state_topic, "zz").reason == "kid"


def test_short_configs_carry_the_same_values_in_fewer_bytes():
    # HA's abbreviations (uniq_id, stat_t, avty_t, ...) for the same entities
    longs = ha.configs(KID_HEX, "elm-street", version="0.1.0")
    shorts = list(ha.iter_configs(KID_HEX, "elm-street", version="0.1.0", short=True))
    assert [t for t, _ in shorts] == [t for t, _ in longs]
    for (_, lp), (_, sp) in zip(longs, shorts):
        lc, sc = json.loads(lp), json.loads(sp)
        assert len(sp) < len(lp), (len(sp), len(lp))
        assert sc["uniq_id"] == lc["unique_id"] and sc["stat_t"] == lc["state_topic"]
        assert sc["avty_t"] == lc["availability_topic"] and sc["val_tpl"] == lc["value_template"]
