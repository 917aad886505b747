# Reads /config.json through lib/deviceconfig's schema. A missing file
# means defaults; a bad field keeps its default and its reason is kept in
# `errors` for the console to show.
#
# Importing the schema (deviceconfig, meterconfig) interns qstrs that are
# never freed, so a config checked without errors is kept in _CACHE and the
# next boots read it with json alone while /config.json and the firmware
# version stay the same. A config with errors is never kept: it is checked,
# and its errors shown, at every boot. _CACHE holds two parts:
#   line 1  the hex SHA-256 of VERSION, /config.json's length and bytes
#           ("-1" and none when absent) and then of part 2's bytes
#   part 2  the checked config as JSON, each bytes value (hub.key, a
#           meter's ek, ak, system_title) as {"#hex": "<hex>"}; no checked
#           dict has that key, since the schema refuses unknown names
# Anything else (missing, torn, another config or version) means checking
# /config.json again and rewriting _CACHE. After a check whose result was
# kept, `kept` is True and main.py soft-reboots before the app starts, so
# the app never carries the schema's qstrs.
import hashlib
import json
import os

from compat import const
from gateway.version import VERSION

PATH = "/config.json"
_CACHE = const("/state/config.checked")  # in boot.STATE_DIR
_MAX_FILE = const(16384)  # as settings.py: a bigger file is refused, not read
_HEX = const("#hex")
kept = False  # this boot checked the config and kept the result in the cache


def load(path=PATH, cache=_CACHE):
    # -> (config, errors)
    try:
        with open(path, "rb") as f:
            src = f.read(_MAX_FILE + 1)
    except OSError:
        src = None
    config = _cached(src, cache)
    if config is not None:
        return config, []
    global kept
    config, errors = _check(src, path)
    if not errors:
        _save(cache, src, config)
        kept = _cached(src, cache) is not None  # what the next boot will read
    return config, errors


def _check(src, path):
    import deviceconfig

    if src is None:
        return deviceconfig.defaults(), []
    if len(src) > _MAX_FILE:
        return deviceconfig.defaults(), ["%s is over %d bytes; using defaults" % (path, _MAX_FILE)]
    try:
        doc = json.loads(src)
    except ValueError:  # UnicodeError too
        return deviceconfig.defaults(), ["%s is not valid JSON; using defaults" % path]
    return deviceconfig.validate(doc)


def _digest(src, body):
    h = hashlib.sha256(("%s\n%d\n" % (VERSION, -1 if src is None else len(src))).encode())
    if src:
        h.update(src)
    h.update(body)
    return h.digest().hex().encode()


def _cached(src, cache):
    # -> the config the cache holds for exactly src and this firmware, or None
    try:
        with open(cache, "rb") as f:
            data = f.read(_MAX_FILE + 1)
    except OSError:
        return None
    body = data[65:]
    if len(data) > _MAX_FILE or data[64:65] != b"\n" or data[:64] != _digest(src, body):
        return None
    try:
        config = _decode(json.loads(body))
    except (ValueError, TypeError, RuntimeError):  # bad hex; RuntimeError: too deep
        return None
    return config if isinstance(config, dict) else None


def _save(cache, src, config):
    try:
        body = json.dumps(_encode(config)).encode()
        if len(body) > _MAX_FILE - 65 or _decode(json.loads(body)) != config:
            return  # would not read back the same: check again next boot
    except (TypeError, ValueError):
        return
    from gateway.boot import write_atomic  # not at the top: boot imports this module

    try:
        os.mkdir(cache.rpartition("/")[0])
    except OSError:
        pass
    try:
        write_atomic(cache, _digest(src, body) + b"\n" + body)
    except OSError:
        pass  # a full flash: the config still applies, checked again next boot


def _encode(v):
    # A copy of v that JSON carries exactly; TypeError for what it cannot.
    if isinstance(v, bytes):
        return {_HEX: v.hex()}
    if isinstance(v, dict):
        out = {}
        for k in v:
            if not isinstance(k, str):
                raise TypeError
            out[k] = _encode(v[k])
        return out
    if isinstance(v, list):
        return [_encode(x) for x in v]
    if v is None or isinstance(v, (str, int, bool)):  # MicroPython: a bool is no int
        return v
    raise TypeError  # a tuple or a float would come back changed


def _decode(v):
    # _encode undone, in place.
    if isinstance(v, dict):
        if len(v) == 1 and _HEX in v:
            return bytes.fromhex(v[_HEX])
        for k in v:
            v[k] = _decode(v[k])
    elif isinstance(v, list):
        for i in range(len(v)):
            v[i] = _decode(v[i])
    return v
