"""Fixtures for end-to-end tests: virtual boards running the real firmware on MicroPython."""

import cbor2
import pytest
from pycose.keys import CoseKey
from pycose.messages import Sign1Message

from host_tools.sim.day import (  # noqa: F401  (the e2e tests import these from here)
    BIN,
    Console,
    SerialExpect,
    deploy_and_enrol,
    run_tool,
    wait_until,
)
from host_tools.vboard import VirtualBoardProcess


def verify_with_pycose(data, cose_key):
    """A COSE_Sign1 checked by pycose (independent of lib/) -> its payload, decoded."""
    tag = cbor2.loads(data)
    p, u, payload, sig = tag.value
    msg = Sign1Message.from_cose_obj([p, dict(u), payload, sig], True)
    msg.key = CoseKey.decode(cose_key)
    assert msg.verify_signature(), "pycose refused a signature"
    return cbor2.loads(payload)


def details(con, name):
    """`meters NAME` as {key: text}."""
    answer = con.command("meters " + name, "protocol")
    rows = {}
    for line in answer.splitlines():
        key, _, text = line.strip().partition("  ")
        if key:
            rows[key] = text.strip()
    assert rows.get("name") == name, answer
    return rows


def errors(rows):
    """The `errors` row of `meters NAME` as {kind: count}."""
    text = rows["errors"]
    return {} if text == "none" else {k: int(v) for k, v in (e.split("=") for e in text.split())}


@pytest.fixture
def vboard(tmp_path):
    """A virtual board with an empty flash."""
    vb = VirtualBoardProcess(tmp_path / "flash", tmp_path / "vb.tty")
    with vb:
        vb.channel.wait_kind("ready", timeout=20)
        yield vb


@pytest.fixture
def deployed(vboard):
    """A virtual board with the firmware deployed by `pgw deploy`, app running."""
    mark = vboard.channel.mark()
    run_tool("pgw", "deploy", "--port", vboard.link, timeout=120)
    # The deploy ends with machine.reset(); wait for the app to arm its watchdog.
    vboard.channel.wait_kind("boot", since=mark, cause="SOFT_RESET", timeout=20)
    vboard.channel.wait_kind("wdt", since=mark, timeout=20)
    return vboard


@pytest.fixture
def console(vboard):
    con = SerialExpect(vboard.link)
    yield con
    con.close()
