"""The checked config kept in /state/config.checked, on a virtual board:
a boot checks a new /config.json with lib/deviceconfig and keeps the
result; the boots after it take that result without importing the schema,
until /config.json changes. Each `mpremote exec` soft-reboots into the raw
REPL: boot.py runs (the config is loaded), main.py and the app do not, so
sys.modules still shows what loading the config imported. The cases in
detail, on CPython and MicroPython: tests/host/test_config_cache.py."""

import json

from conftest import run_tool

SHOW = ("import sys, json, gateway.boot as b\n"
        "print('@@schema', 'deviceconfig' in sys.modules, 'meterconfig' in sys.modules, len(b.config_errors))\n"
        "import deviceconfig\n"
        "print('@@same', b.config == deviceconfig.validate(json.load(open('/config.json')))[0],"
        " b.config['heartbeat_s'])\n")
METER = {"name": "grid", "protocol": "dlms-push", "uart": 2, "ek": "00" * 16, "system_title": "4d4d4d0000bc614e"}


def boot_and_show(vb):
    out = run_tool("mpremote", "connect", vb.link, "exec", SHOW, timeout=60).stdout
    return [line.strip() for line in out.splitlines() if line.startswith("@@")]


def test_an_unchanged_config_is_not_checked_again(deployed):
    conf, cache = deployed.root / "config.json", deployed.root / "state" / "config.checked"
    conf.write_text(json.dumps({"heartbeat_s": 7, "meters": [METER]}))
    assert boot_and_show(deployed) == ["@@schema True True 0", "@@same True 7"]
    written = cache.read_bytes()
    assert boot_and_show(deployed) == ["@@schema False False 0", "@@same True 7"]
    conf.write_text(json.dumps({"heartbeat_s": 8, "meters": [METER]}))
    assert boot_and_show(deployed) == ["@@schema True True 0", "@@same True 8"]
    assert cache.read_bytes() != written
    cache.write_bytes(cache.read_bytes()[:100])  # torn
    assert boot_and_show(deployed) == ["@@schema True True 0", "@@same True 8"]
    assert boot_and_show(deployed) == ["@@schema False False 0", "@@same True 8"]
    written = cache.read_bytes()
    conf.write_text(json.dumps({"heartbeat_s": 0, "meters": [METER]}))  # an error: checked at every boot
    for _ in range(2):
        assert boot_and_show(deployed) == ["@@schema True True 1", "@@same True 10"]
    assert cache.read_bytes() == written
