# lib/trade/commands.py: the COMMAND gate. Commands are signed here with
# the protocol's test keys (tests/lib/protocol_vectors.py); the accepted
# one is the COMMAND vector of docs/protocol.md.
from fuzzing import Xorshift32, iterations, mutate
from mpcompat import raises

import cbor
import cose
from trade import commands
from trade import messages as m
from protocol_vectors import BUYER_D, DEVICE_D, HUB_D, VECTORS, Signer

HUB = Signer(HUB_D)
DEV = Signer(DEVICE_D)
OTHER = Signer(BUYER_D)
NOW = 1750503700  # the COMMAND vector's ts and valid_from

GOOD = {"target": DEV.kid, "valid_from": NOW, "valid_until": NOW + 900, "action": 0, "actuator": 0,
        "value": -2500}


def command(seq=80, ts=NOW, signer=HUB, kid=None, mtype=m.COMMAND, **changes):
    f = dict(GOOD)
    f.update(changes)
    return m.sign(mtype, seq, ts, f, kid or signer.kid, signer)


def gate(last_seq=0):
    return commands.CommandGate(DEV.kid, {HUB.kid: HUB.pub}, last_seq)


def reason(g, data, now=NOW):
    return raises(commands.CommandRejected, g.admit, data, now).reason


def test_the_protocol_vector_is_accepted():
    vec = [v for v in VECTORS if v[0] == "command"][0]
    assert vec[5] == GOOD and vec[3] == 80 and vec[4] == NOW, vec
    g = gate()
    cmd = g.admit(command(), NOW + 10)
    assert (cmd.action, cmd.actuator, cmd.kind, cmd.value, cmd.seq) == (0, 0, "battery_w", -2500, 80), cmd
    assert (cmd.ts, cmd.valid_from, cmd.valid_until) == (NOW, NOW, NOW + 900)
    assert g.last_seq == 80
    assert cmd.active(NOW) and cmd.active(NOW + 899) and not cmd.active(NOW + 900)
    assert not cmd.active(NOW - 1)
    assert g.counts()["accepted"] == 1


def test_every_actuator_and_its_kind():
    g = gate()
    seq = 100
    for action, actuator, kind, lo, hi in commands.ACTUATORS:
        for value in (lo, hi):
            seq += 1
            cmd = g.admit(command(seq, action=action, actuator=actuator, value=value), NOW)
            assert (cmd.kind, cmd.value) == (kind, value), (kind, value)
    assert g.last_seq == seq
    assert [r[2] for r in commands.ACTUATORS] == ["battery_w", "ev_ma", "battery_relay", "ev_relay",
                                                  "import_limit_w"]


def test_each_command_is_accepted_once():
    g = gate()
    data = command(81)
    g.admit(data, NOW)
    assert reason(g, data) == "replay"
    assert reason(g, command(80)) == "replay"  # older: would undo the newer one
    g.admit(command(95), NOW)
    assert reason(g, command(90)) == "replay"  # no window: strictly increasing
    assert g.last_seq == 95
    # after a reboot, from the persisted last_seq
    g2 = gate(g.last_seq)
    assert reason(g2, command(95)) == "replay"
    g2.admit(command(96), NOW)


def test_forged_and_foreign_commands_never_move_last_seq():
    g = gate(10)
    # the hub's kid on a message signed by another key
    assert reason(g, command(50, signer=OTHER, kid=HUB.kid)) == "signature"
    # a signed command with one payload byte changed (value -2500 -> -2501)
    data = bytearray(command(51))
    pos = bytes(data).find(b"\x39\x09\xc3")
    assert pos > 0
    data[pos + 2] = 0xC4
    assert reason(g, bytes(data)) == "signature"
    # a well-signed command from a key that is not the hub's
    assert reason(g, command(52, signer=DEV)) == "unknown_key"
    assert reason(g, command(53, signer=OTHER)) == "unknown_key"
    assert g.last_seq == 10
    c = g.counts()
    assert (c["signature"], c["unknown_key"], c["accepted"]) == (2, 2, 0), c
    g.admit(command(11), NOW)  # the next genuine command is still taken


def test_malformed_and_oversize():
    g = gate()
    assert reason(g, b"") == "malformed"
    assert reason(g, b"\xd2\x84") == "malformed"
    assert reason(g, "not bytes") == "malformed"
    assert reason(g, bytes(m.MAX_MESSAGE + 1)) == "oversize"
    # untagged COSE_Sign1
    assert reason(g, cbor.dumps(cbor.loads(command()).value)) == "malformed"
    # signed by the hub but not a protocol message: no kid at all
    no_kid = cbor.dumps(cbor.Tag(18, [cbor.dumps({1: -7}), {}, b"\x80", bytes(64)]))
    assert reason(g, no_kid) == "malformed"
    # a hub-signed payload that is not a valid COMMAND (missing fields)
    short = cose.sign1(cbor.dumps([1, 7, 5, NOW, DEV.kid]), HUB.kid, HUB)
    assert reason(g, short) == "malformed"
    # bytearray and memoryview input are fine
    g.admit(bytearray(command(1)), NOW)
    g.admit(memoryview(command(2)), NOW)


def test_not_a_command_and_wrong_target():
    g = gate()
    ack = m.sign(m.ACK, 90, NOW, {"device": DEV.kid, "acked_seq": 3}, HUB.kid, HUB)
    assert reason(g, ack) == "not_command"
    assert reason(g, command(91, target=OTHER.kid)) == "wrong_target"
    assert g.last_seq == 0


def test_window():
    g = gate()
    assert reason(g, command(1, valid_until=NOW)) == "window"  # empty
    assert reason(g, command(2, valid_from=NOW + 10, valid_until=NOW)) == "window"
    assert reason(g, command(3, valid_until=NOW + commands.MAX_WINDOW_S + 1)) == "window"
    g.admit(command(4, valid_until=NOW + commands.MAX_WINDOW_S), NOW)


def test_actuator_and_value():
    g = gate()
    assert reason(g, command(1, action=1, actuator=2, value=1)) == "actuator"  # relay on the grid
    assert reason(g, command(2, action=2, actuator=0, value=1000)) == "actuator"
    assert reason(g, command(3, action=0, actuator=15, value=0)) == "actuator"
    for action, actuator, kind, lo, hi in commands.ACTUATORS:
        assert reason(g, command(4, action=action, actuator=actuator, value=lo - 1)) == "value", kind
        assert reason(g, command(4, action=action, actuator=actuator, value=hi + 1)) == "value", kind
    assert g.last_seq == 0


def test_not_yet_valid_and_expired():
    g = gate()
    data = command(7, valid_from=NOW + 60, valid_until=NOW + 600)
    assert reason(g, data, NOW) == "not_yet_valid"
    assert reason(g, data, NOW + 59) == "not_yet_valid"
    assert reason(g, command(8), NOW + 900) == "expired"  # valid_until is exclusive
    # the message's own timestamp, 300 s either side
    assert reason(g, command(9, ts=NOW + 301)) == "not_yet_valid"
    assert reason(g, command(10, ts=NOW - 301)) == "expired"
    assert g.last_seq == 0
    # a refused command is not used up: the same bytes work once valid
    cmd = g.admit(data, NOW + 60)
    assert cmd.seq == 7 and g.last_seq == 7
    raises(TypeError, g.admit, data, None)


def test_counts_cover_every_reason():
    g = gate()
    c = g.counts()
    assert sorted(c) == sorted(list(commands.REASONS) + ["accepted"]), c
    assert sum(c.values()) == 0
    reason(g, b"")
    reason(g, b"")
    reason(g, command(5, target=OTHER.kid))
    c = g.counts()
    assert (c["malformed"], c["wrong_target"]) == (2, 1), c


def test_bad_gate_config():
    e = commands.GateConfigError
    raises(e, commands.CommandGate, b"short", {HUB.kid: HUB.pub})
    raises(e, commands.CommandGate, DEV.kid, {})
    raises(e, commands.CommandGate, DEV.kid, {DEV.kid: HUB.pub})  # kid is not the key's
    raises(e, commands.CommandGate, DEV.kid, {HUB.kid: (HUB.pub[0], HUB.pub[1] + 1)})
    raises(e, commands.CommandGate, DEV.kid, {HUB.kid: None})
    raises(e, commands.CommandGate, DEV.kid, {HUB.kid: HUB.pub}, -1)
    raises(e, commands.CommandGate, DEV.kid, {HUB.kid: HUB.pub}, 1 << 64)
    assert raises(e, commands.CommandGate, DEV.kid, {HUB.kid: HUB.pub}, True).reason == "config"
    # two hub keys (a key roll): both are taken
    g = commands.CommandGate(DEV.kid, {HUB.kid: HUB.pub, OTHER.kid: OTHER.pub})
    g.admit(command(1), NOW)
    g.admit(command(2, signer=OTHER), NOW)


def test_fuzzed_commands_are_refused_cleanly():
    # Mutated signed commands: CommandRejected only; anything accepted is
    # the seed's command (a change that verifies can only be in the
    # unsigned, empty unprotected header).
    seeds = [command(1000), command(1001, action=1, actuator=1, value=1),
             command(1002, action=2, actuator=2, value=4000, valid_until=NOW + 60),
             m.sign(m.ACK, 1003, NOW, {"device": DEV.kid, "acked_seq": 3}, HUB.kid, HUB)]
    rng = Xorshift32(7007)
    seen = {}
    for i in range(iterations(300)):
        seed = seeds[i % len(seeds)]
        data = mutate(rng, seed, b"\x1b\xff\xff\xff\xff\xff\xff\xff\xff")
        g = gate(999)
        try:
            cmd = g.admit(data, NOW + 30)
        except commands.CommandRejected as e:
            assert e.reason in commands.REASONS, e.reason
            seen[e.reason] = seen.get(e.reason, 0) + 1
            assert g.last_seq == 999
            continue
        want = gate(999).admit(seed, NOW + 30)
        assert (cmd.seq, cmd.kind, cmd.value, cmd.valid_until) == \
            (want.seq, want.kind, want.value, want.valid_until), (i, data)
    assert "malformed" in seen and "signature" in seen, seen
