# Home Assistant MQTT discovery (docs/home-assistant.md): the retained
# config messages that make a gateway's sensors appear in Home Assistant,
# and the one JSON state message they all read.
#
# Config topics follow HA's <prefix>/<component>/<node_id>/<object_id>/config
# with node_id pgw_<kid>. Every entity shares one device block, reads one
# state topic through its own value_template, and is available while the
# device's retained status topic (its MQTT last will) says "online".
# Values travel as integers (W, Wh, %, mA, micro-units of money): ESP32
# builds have single-precision floats, so the division to A and to the
# currency happens in HA's template, which renders "None" (HA: unknown)
# for a null value.
import json

from trade import topics

COMPONENT = "sensor"

# (object_id, name, state key, unit, device_class, state_class, scale):
# scale 0 passes the integer through, else the template divides by it.
ENTITIES = (
    ("power", "Power", "power_w", "W", "power", "measurement", 0),
    ("energy_import", "Energy import", "import_wh", "Wh", "energy", "total_increasing", 0),
    ("energy_export", "Energy export", "export_wh", "Wh", "energy", "total_increasing", 0),
    ("battery", "Battery", "soc_pct", "%", "battery", "measurement", 0),
    ("ev_current", "EV charging current", "ev_ma", "A", "current", "measurement", 1000),
    ("trade_balance", "Trade balance", "balance", None, "monetary", "total", 1000000),
)


# HA's abbreviated keys (MQTT integration, "Supported abbreviations in MQTT
# discovery messages"), for iter_configs(short=True).
_SHORT_KEYS = {
    "unique_id": "uniq_id", "state_topic": "stat_t", "value_template": "val_tpl",
    "unit_of_measurement": "unit_of_meas", "device_class": "dev_cla", "state_class": "stat_cla",
    "availability_topic": "avty_t", "device": "dev", "origin": "o", "identifiers": "ids",
    "manufacturer": "mf", "model": "mdl", "sw_version": "sw",
}


class DiscoveryError(ValueError):
    # reason: "kid", "community", "prefix", "text", "value" (.key names
    # the state value)
    def __init__(self, reason, detail, key=None):
        super().__init__("%s: %s" % (reason, detail))
        self.reason = reason
        self.key = key


def _kid(kid_hex):
    if not isinstance(kid_hex, str) or len(kid_hex) != 16 or \
            any(c not in "0123456789abcdef" for c in kid_hex):
        raise DiscoveryError("kid", "kid_hex must be 16 lowercase hex digits")
    return bytes(int(kid_hex[i:i + 2], 16) for i in range(0, 16, 2))


def _prefix(prefix):
    if not isinstance(prefix, str) or not 1 <= len(prefix) <= 64 or \
            any(c in "+#\x00" for c in prefix) or prefix[0] == "/" or prefix[-1] == "/":
        raise DiscoveryError("prefix", "prefix must be 1-64 characters, no + # or outer /")
    return prefix


def _text(value, what):
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        raise DiscoveryError("text", "%s must be 1-64 characters" % what)
    return value


def node_id(kid_hex):
    _kid(kid_hex)
    return "pgw_" + kid_hex


def state_topic(kid_hex, prefix="homeassistant"):
    # Where the firmware publishes state() (HA's own examples keep state
    # topics beside the config topics).
    return "%s/%s/%s/state" % (_prefix(prefix), COMPONENT, node_id(kid_hex))


def _template(key, scale):
    if not scale:
        return "{{ value_json.%s }}" % key
    return "{{ none if value_json.%s is none else value_json.%s / %d }}" % (key, key, scale)


def configs(kid_hex, community, prefix="homeassistant", name="Prosumer Gateway", version=None,
            model="pgw", currency="EUR"):
    # -> [(topic, payload bytes)], to publish retained, one per entity.
    # version: the firmware version (HA's sw_version), left out if None.
    # currency: ISO 4217 code of the community's money.
    return list(iter_configs(kid_hex, community, prefix, name, version, model, currency))


def _abbreviated(doc):
    return {_SHORT_KEYS.get(k, k): v for k, v in doc.items()}


def iter_configs(kid_hex, community, prefix="homeassistant", name="Prosumer Gateway", version=None,
                 model="pgw", currency="EUR", short=False):
    # configs() one message at a time (a generator: the arguments are
    # checked at the first next()), so a device holds one payload, not six.
    # short: HA's abbreviated keys, no spaces, no availability payloads
    # (HA's defaults are ours): about 70 % of the bytes, for a tight heap.
    kid = _kid(kid_hex)
    try:
        available = topics.device(community, kid, "status")
    except topics.TopicError as e:
        raise DiscoveryError("community", str(e))
    node = node_id(kid_hex)
    stat = state_topic(kid_hex, prefix)
    device = {"identifiers": [node], "name": _text(name, "name"), "manufacturer": "Prosumer Gateway",
              "model": _text(model, "model")}
    origin = {"name": "pgw"}
    if version is not None:
        device["sw_version"] = origin["sw_version"] = _text(version, "version")
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isupper():
        raise DiscoveryError("text", "currency must be a 3-letter ISO 4217 code")
    if short:
        device, origin = _abbreviated(device), _abbreviated(origin)
    for object_id, label, key, unit, device_class, state_class, scale in ENTITIES:
        config = {
            "name": label,
            "has_entity_name": True,
            "unique_id": "%s_%s" % (node, object_id),
            "state_topic": stat,
            "value_template": _template(key, scale),
            "unit_of_measurement": unit or currency,
            "device_class": device_class,
            "state_class": state_class,
            "availability_topic": available,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
            "origin": origin,
        }
        if short:
            del config["payload_available"], config["payload_not_available"]
            payload = json.dumps(_abbreviated(config), separators=(",", ":"))
        else:
            payload = json.dumps(config)
        # only the bytes stay referenced while the caller sends them
        config = None
        payload = payload.encode()
        yield ("%s/%s/%s/%s/config" % (prefix, COMPONENT, node, object_id), payload)


def removals(kid_hex, prefix="homeassistant"):
    # -> [(topic, b"")]: publishing these retained removes the entities
    # (for when discovery is turned off again).
    node = node_id(kid_hex)
    _prefix(prefix)
    return [("%s/%s/%s/%s/config" % (prefix, COMPONENT, node, e[0]), b"") for e in ENTITIES]


_STATE_RANGES = (
    ("power_w", -(1 << 31), (1 << 31) - 1),
    ("import_wh", 0, (1 << 64) - 1),
    ("export_wh", 0, (1 << 64) - 1),
    ("soc_pct", 0, 100),
    ("ev_ma", 0, 1000000),
    ("balance", -(1 << 63), (1 << 63) - 1),
)


def state(power_w=None, import_wh=None, export_wh=None, soc_pct=None, ev_ma=None, balance=None):
    # -> the JSON state payload. power_w: net power (+ import); import_wh,
    # export_wh: the meter's registers; soc_pct: battery; ev_ma: EV
    # charging current; balance: trade balance, micro-units. None: null
    # (HA shows unknown).
    values = (power_w, import_wh, export_wh, soc_pct, ev_ma, balance)
    doc = {}
    for i in range(len(values)):
        key, lo, hi = _STATE_RANGES[i]
        v = values[i]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi):
            raise DiscoveryError("value", "%s must be an int in %d..%d or None, got %r" % (key, lo, hi, v), key)
        doc[key] = v
    return json.dumps(doc).encode()
