"""host_tools/hub/settlement.py: the worked example of docs/hub.md ("Settlement")
to the micro-unit, the plausibility checks at their edges, and properties on
random neighbourhoods: tokens and energy conserve, status follows delivery,
excluded households deliver nothing, the input's order never matters, and
bad input raises SettlementError with a reason."""

import random
from fractions import Fraction

import cbor2
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from host_tools.hub.settlement import (FAILED, FULL, PARTIAL, Flag, IntervalSettlement, Ledger, Posting,
                                       SettlementError, check_reading, settle)


def kid(c):
    return bytes([c]) * 8


A, B, C, D, E, F, G = (kid(c) for c in b"ABCDEFG")
START = 1750507200  # 2025-06-21 12:00 UTC
END = START + 900


def reading(imp, exp, imp_reg=0, exp_reg=0, ts=END, interval_min=15):
    return {"interval_min": interval_min, "ts": ts, "import_wh": imp, "export_wh": exp,
            "import_register_wh": imp_reg, "export_register_wh": exp_reg, "power_w": 0, "meter": b"grid"}


LIMITS = {"max_import_w": 11000, "max_export_w": 4000}
TARIFF = {"retail_price": 300000, "feed_in_price": 80000}


def example():
    """docs/hub.md, "Settlement", "Worked example"."""
    readings = {A: reading(0, 803, 5000, 20803), B: reading(700, 0), C: reading(250, 0),
                D: reading(0, 1200), E: reading(500, 0), F: reading(0, 350), G: reading(200, 0)}
    previous = {A: {"import_register_wh": 5000, "export_register_wh": 20000, "ts": START}}
    trades = [(101, A, B, 600, 190000), (102, A, C, 400, 190002), (103, D, E, 500, 200000),
              (104, F, G, 200, 180000)]
    limits = {k: LIMITS for k in readings}
    tariffs = {k: TARIFF for k in readings}
    return trades, readings, previous, limits, tariffs


def test_worked_example_to_the_micro_unit():
    s = settle(START, *example(), interval_min=15)
    got = {t.trade_id: (t.seller_share_wh, t.buyer_share_wh, t.delivered_wh, t.amount, t.status, t.reason)
           for t in s.trades}
    assert got == {101: (482, 700, 482, 78600, PARTIAL, "seller_short"),
                   102: (321, 250, 250, 55311, PARTIAL, "buyer_short"),
                   103: (0, 0, 0, 0, FAILED, "seller:above_limit"),
                   104: (350, 200, 200, 36000, FULL, None)}
    assert s.postings == (
        Posting(B, -91580, 101, "energy"), Posting(A, 91580, 101, "energy"),
        Posting(A, -12980, 101, "seller_shortfall"), Posting(B, 12980, 101, "seller_shortfall"),
        Posting(C, -47501, 102, "energy"), Posting(A, 47501, 102, "energy"),
        Posting(C, -7810, 102, "buyer_shortfall"), Posting(A, 7810, 102, "buyer_shortfall"),
        Posting(E, 0, 103, "failed:seller:above_limit"), Posting(D, 0, 103, "failed:seller:above_limit"),
        Posting(G, -36000, 104, "energy"), Posting(F, 36000, 104, "energy"))
    assert s.flags == (Flag(D, "above_limit"),)
    assert s.balances() == {A: 133911, B: -78600, C: -55311, D: 0, E: 0, F: 36000, G: -36000}
    assert [t.settlement_fields() for t in s.trades] == [
        [101, 482, 78600, 1], [102, 250, 55311, 1], [103, 0, 0, 2], [104, 200, 36000, 0]]
    ledger = Ledger()
    ledger.apply(s)
    assert ledger.total() == 0 and ledger.balance(A) == 133911 and ledger.balance(kid(0)) == 0


def test_the_protocol_settlement_vector():
    # docs/protocol.md's TRADE vector (9001: 1200 Wh at 165000) settled in full
    # gives its SETTLEMENT vector's fields
    payload = cbor2.loads(bytes.fromhex("880104184e1a68568e581923291904b01a0003057000"))
    big = {"max_import_w": 8000, "max_export_w": 8000}
    s = settle(START, [(9001, A, B, 1200, 165000)], {A: reading(0, 1300), B: reading(1250, 0)}, None,
               {A: big, B: big}, {A: TARIFF, B: TARIFF}, interval_min=15)
    assert s.trades[0].settlement_fields() == payload[4:]


# ---- check_reading ----

def test_limit_tolerance_edge():
    # 4000 W for 15 min is 1000 Wh; 5 % over is still believed
    assert check_reading(reading(0, 1050), None, LIMITS) is None
    assert check_reading(reading(0, 1051), None, LIMITS) == "above_limit"
    assert check_reading(reading(2887, 0), None, LIMITS) is None  # 11000 W: 2750 Wh, +5 % = 2887.5
    assert check_reading(reading(2888, 0), None, LIMITS) == "above_limit"
    assert check_reading(reading(1, 0), None, {"max_import_w": 0, "max_export_w": 0}) == "above_limit"
    assert check_reading(reading(0, 1575, interval_min=30, ts=START + 1800), None, LIMITS) is None


def test_negative_energy():
    assert check_reading(reading(-1, 0), None, LIMITS) == "negative_delta"
    assert check_reading(reading(0, -5), None, LIMITS) == "negative_delta"


def test_registers_against_the_previous_reading():
    adjacent = {"import_register_wh": 1000, "export_register_wh": 500, "ts": START}
    assert check_reading(reading(10, 20, 1010, 520), adjacent, LIMITS) is None
    assert check_reading(reading(10, 20, 999, 520), adjacent, LIMITS) == "register_rollback"
    assert check_reading(reading(0, 0, 1000, 499), adjacent, LIMITS) == "register_rollback"
    assert check_reading(reading(10, 20, 1011, 520), adjacent, LIMITS) == "register_mismatch"
    assert check_reading(reading(10, 20, 1010, 519), adjacent, LIMITS) == "register_mismatch"
    no_ts = {"import_register_wh": 1000, "export_register_wh": 500}  # taken as adjacent
    assert check_reading(reading(10, 20, 1011, 520), no_ts, LIMITS) == "register_mismatch"
    # intervals missing in between: the register grew by at least this one's energy
    older = dict(adjacent, ts=START - 3600)
    assert check_reading(reading(10, 20, 1900, 520), older, LIMITS) is None
    assert check_reading(reading(10, 20, 1009, 520), older, LIMITS) == "register_mismatch"
    with pytest.raises(SettlementError) as e:
        check_reading(reading(10, 20, 1010, 520), dict(adjacent, ts=START + 60), LIMITS)
    assert e.value.reason == "previous"


# ---- settle: rules at their edges ----

def two(trades, readings, **kw):
    kids = {k for t in trades for k in t[1:3]} | set(readings)
    return settle(START, trades, readings, kw.get("previous"), {k: LIMITS for k in kids},
                  {k: kw.get("tariff", TARIFF) for k in kids}, interval_min=15)


def test_largest_remainder_ties_go_to_the_lower_trade_id():
    s = two([(8, A, B, 100, 0), (7, A, C, 100, 0), (9, A, D, 100, 0)],
            {A: reading(0, 2), B: reading(100, 0), C: reading(100, 0), D: reading(100, 0)})
    assert [(t.trade_id, t.seller_share_wh) for t in s.trades] == [(7, 1), (8, 1), (9, 0)]


def test_money_rounds_half_up():
    s = two([(1, A, B, 1, 500)], {A: reading(0, 1), B: reading(1, 0)})  # 0.5 µ
    assert s.trades[0].amount == 1
    s = two([(1, A, B, 1, 499)], {A: reading(0, 1), B: reading(1, 0)})  # 0.499 µ
    assert s.trades[0].amount == 0


def test_no_compensation_when_the_price_is_outside_the_tariff_band():
    odd = {"retail_price": 100000, "feed_in_price": 250000}
    s = two([(1, A, B, 100, 200000)], {A: reading(0, 50), B: reading(100, 0)}, tariff=odd)
    assert (s.trades[0].amount, s.trades[0].reason) == (10000, "seller_short")
    s = two([(1, A, B, 100, 200000)], {A: reading(0, 100), B: reading(50, 0)}, tariff=odd)
    assert (s.trades[0].amount, s.trades[0].reason) == (10000, "buyer_short")


def test_both_short_by_the_same_wh_owes_nothing_extra():
    s = two([(1, A, B, 100, 200000)], {A: reading(0, 60), B: reading(60, 0)})
    t = s.trades[0]
    assert (t.delivered_wh, t.amount, t.status, t.reason) == (60, 12000, PARTIAL, "both_short")


def test_nothing_measured_is_partial_not_failed():
    s = two([(1, A, B, 100, 200000)], {A: reading(0, 0), B: reading(100, 0)})
    t = s.trades[0]
    # the buyer bought all 100 Wh from the grid: the seller pays (300000 - 200000) x 0.1 kWh
    assert (t.delivered_wh, t.amount, t.status, t.reason) == (0, -10000, PARTIAL, "seller_short")


def test_missing_and_misdated_readings_exclude_the_household():
    s = two([(1, A, B, 100, 200000), (2, C, D, 100, 200000)],
            {A: reading(0, 100), C: reading(0, 100), D: reading(100, 0, ts=END + 900)})
    assert s.flags == (Flag(B, "missing_reading"), Flag(D, "wrong_interval"))
    assert [(t.status, t.reason) for t in s.trades] == [(FAILED, "buyer:missing_reading"),
                                                       (FAILED, "buyer:wrong_interval")]
    s = two([(1, A, B, 100, 200000)], {A: reading(0, 100), B: reading(100, 0, ts=START + 1800, interval_min=30)})
    assert s.flags == (Flag(B, "wrong_interval"),)


def test_a_failed_trade_takes_no_share():
    # B is excluded, so all of A's 100 Wh can go to its trade with C
    s = two([(1, A, B, 100, 200000), (2, A, C, 100, 200000)],
            {A: reading(0, 100), B: reading(-1, 0), C: reading(100, 0)})
    assert [(t.delivered_wh, t.status) for t in s.trades] == [(0, FAILED), (100, FULL)]


def test_flagged_household_without_trades_is_still_reported():
    s = two([], {A: reading(0, 0, 10, 0)}, previous={A: {"import_register_wh": 20, "export_register_wh": 0}})
    assert s.flags == (Flag(A, "register_rollback"),) and s.trades == () and s.postings == ()


# ---- bad input ----

def good():
    trades = [(1, A, B, 100, 200000)]
    readings = {A: reading(0, 100), B: reading(100, 0)}
    return dict(trades=trades, readings=readings, previous=None, limits={A: LIMITS, B: LIMITS},
                tariffs={A: TARIFF, B: TARIFF})


BAD = [
    ("unknown kid in a trade", lambda a: a["trades"].append((2, A, C, 10, 1)), "unknown_household"),
    ("reading without limits", lambda a: a["readings"].__setitem__(C, reading(0, 0)), "unknown_household"),
    ("no tariff", lambda a: a["tariffs"].pop(B), "unknown_household"),
    ("duplicate trade_id", lambda a: a["trades"].append((1, B, A, 10, 1)), "duplicate_trade"),
    ("self trade", lambda a: a["trades"].append((2, A, A, 10, 1)), "self_trade"),
    ("short kid", lambda a: a["trades"].append((2, b"A", B, 10, 1)), "kid"),
    ("str kid", lambda a: a["trades"].append((2, "AAAAAAAA", B, 10, 1)), "kid"),
    ("zero energy", lambda a: a["trades"].append((2, A, B, 0, 1)), "value"),
    ("negative price", lambda a: a["trades"].append((2, A, B, 10, -1)), "value"),
    ("huge energy", lambda a: a["trades"].append((2, A, B, 2**32, 1)), "value"),
    ("float energy", lambda a: a["trades"].append((2, A, B, 10.0, 1)), "type"),
    ("bool price", lambda a: a["trades"].append((2, A, B, 10, True)), "type"),
    ("short tuple", lambda a: a["trades"].append((2, A, B, 10)), "type"),
    ("trades as a dict", lambda a: a.__setitem__("trades", {}), "type"),
    ("reading not a mapping", lambda a: a["readings"].__setitem__(A, [0, 100]), "type"),
    ("reading field missing", lambda a: a["readings"][A].pop("ts"), "missing"),
    ("float reading", lambda a: a["readings"][A].__setitem__("export_wh", 100.0), "type"),
    ("negative register", lambda a: a["readings"][A].__setitem__("import_register_wh", -1), "value"),
    ("interval_min 0", lambda a: a["readings"][A].__setitem__("interval_min", 0), "value"),
    ("negative limit", lambda a: a["limits"].__setitem__(A, {"max_import_w": -1, "max_export_w": 0}), "value"),
    ("tariff None", lambda a: a["tariffs"].__setitem__(A, {"retail_price": None, "feed_in_price": 0}), "type"),
    ("previous str", lambda a: a.__setitem__("previous", {A: {"import_register_wh": "1",
                                                              "export_register_wh": 0}}), "type"),
    ("previous after", lambda a: a.__setitem__("previous", {A: {"import_register_wh": 0, "export_register_wh": 0,
                                                                "ts": END}}), "previous"),
]


@pytest.mark.parametrize("name,spoil,reason", BAD, ids=[b[0] for b in BAD])
def test_bad_input_has_a_reason(name, spoil, reason):
    args = good()
    spoil(args)
    with pytest.raises(SettlementError) as e:
        settle(START, interval_min=15, **args)
    assert e.value.reason == reason and str(e.value)


@pytest.mark.parametrize("start,minutes,reason", [(-1, 15, "value"), (START, 0, "value"), (START, 15.0, "type"),
                                                  ("x", 15, "type")])
def test_bad_interval(start, minutes, reason):
    with pytest.raises(SettlementError) as e:
        settle(start, interval_min=minutes, **good())
    assert e.value.reason == reason


# ---- Ledger ----

def test_ledger_is_all_or_nothing_and_takes_a_trade_once():
    ledger = Ledger()
    ledger.apply([Posting(A, -5, 1, "energy"), Posting(B, 5, 1, "energy")])
    with pytest.raises(SettlementError) as e:
        ledger.apply([Posting(A, -5, 2, "energy"), Posting(B, 5, 2, "energy"), Posting(C, 1, 3, "energy")])
    assert e.value.reason == "unbalanced"
    with pytest.raises(SettlementError) as e:
        ledger.apply([Posting(A, -1, 1, "energy"), Posting(B, 1, 1, "energy")])
    assert e.value.reason == "already_applied"
    with pytest.raises(SettlementError) as e:
        ledger.apply([(A, 1.0, 4, "energy")])
    assert e.value.reason == "type"
    assert ledger.balances == {A: -5, B: 5} and ledger.total() == 0


# ---- properties on random neighbourhoods ----

@st.composite
def neighbourhoods(draw):
    n = draw(st.integers(2, 7))
    kids = [kid(0x41 + i) for i in range(n)]
    limits, tariffs, readings, previous = {}, {}, {}, {}
    for k in kids:
        limits[k] = {"max_import_w": draw(st.integers(0, 20000)), "max_export_w": draw(st.integers(0, 20000))}
        feed_in = draw(st.integers(0, 150000))
        tariffs[k] = {"feed_in_price": feed_in, "retail_price": draw(st.integers(feed_in, 400000))}
        # mostly plausible: up to 10 % over the limit, so some are flagged
        imp = draw(st.integers(0, limits[k]["max_import_w"] * 11 // 40))
        exp = draw(st.integers(0, limits[k]["max_export_w"] * 11 // 40))
        imp_reg0, exp_reg0 = draw(st.integers(0, 10**7)), draw(st.integers(0, 10**7))
        fault = draw(st.sampled_from(["none"] * 14 + ["first", "rollback", "mismatch", "negative", "late",
                                                     "missing"]))
        r = reading(imp, exp, imp_reg0 + imp, exp_reg0 + exp)
        previous[k] = {"import_register_wh": imp_reg0, "export_register_wh": exp_reg0, "ts": START}
        if fault == "first":
            previous[k] = None
        elif fault == "rollback":
            previous[k]["export_register_wh"] = r["export_register_wh"] + 1
        elif fault == "mismatch":
            r["import_register_wh"] += 1
        elif fault == "negative":
            r["import_wh"] = -1
        elif fault == "late":
            r["ts"] += 900
        if fault != "missing":
            readings[k] = r
    pairs = st.tuples(st.sampled_from(kids), st.sampled_from(kids)).filter(lambda p: p[0] != p[1])
    ids = draw(st.lists(st.integers(0, 10**6), unique=True, max_size=12))
    trades = [(i, *draw(pairs), draw(st.integers(1, 300) | st.integers(1, 3000)),
               draw(st.integers(0, 400000))) for i in ids]
    return trades, readings, previous, limits, tariffs


def shuffled(args, rnd):
    trades, readings, previous, limits, tariffs = args
    trades = list(trades)
    rnd.shuffle(trades)

    def mix(d):
        items = list(d.items())
        rnd.shuffle(items)
        return dict(items)
    return trades, mix(readings), mix(previous), mix(limits), mix(tariffs)


@settings(max_examples=400, deadline=None)
@given(neighbourhoods(), st.randoms(use_true_random=False))
def test_settlement_conserves_energy_and_tokens(args, rnd):
    trades, readings, previous, limits, tariffs = args
    s = settle(START, *args, interval_min=15)
    assert isinstance(s, IntervalSettlement)
    assert [t.trade_id for t in s.trades] == sorted(t[0] for t in trades)

    # tokens: every trade's postings sum to zero, and the amount is what moved
    assert sum(p.tokens for p in s.postings) == 0
    for t in s.trades:
        mine = [p for p in s.postings if p.trade_id == t.trade_id]
        assert sum(p.tokens for p in mine) == 0 and len(mine) in (2, 4)
        assert sum(p.tokens for p in mine if p.account == t.seller) == t.amount
        assert sum(p.tokens for p in mine if p.account == t.buyer) == -t.amount
        assert all(type(p.tokens) is int for p in mine)
    ledger = Ledger()
    ledger.apply(s)
    assert ledger.total() == 0 and ledger.balances == s.balances()

    # flags: exactly what check_reading says, plus missing and misdated readings
    flagged = dict(s.flags)
    for k, r in readings.items():
        expect = "wrong_interval" if r["ts"] != END else check_reading(r, previous[k], limits[k])
        assert flagged.get(k) == expect
    for t in trades:
        for k in t[1:3]:
            if k not in readings:
                assert flagged[k] == "missing_reading"

    # energy and status
    sold, bought = {}, {}
    for t in s.trades:
        assert 0 <= t.delivered_wh <= t.energy_wh
        excluded = t.seller in flagged or t.buyer in flagged
        assert (t.status == FAILED) == excluded
        if excluded:
            assert (t.delivered_wh, t.amount) == (0, 0)
            continue
        assert t.delivered_wh == min(t.energy_wh, t.seller_share_wh, t.buyer_share_wh)
        assert (t.status == FULL) == (t.delivered_wh == t.energy_wh)
        sold.setdefault(t.seller, []).append(t)
        bought.setdefault(t.buyer, []).append(t)
        # each money component within half a micro-unit of the exact value
        payment = Fraction(t.delivered_wh * t.price, 1000)
        extra = t.amount - payment
        if t.reason == "seller_short":
            exact = -Fraction((min(t.energy_wh, t.buyer_share_wh) - t.delivered_wh)
                              * max(0, tariffs[t.buyer]["retail_price"] - t.price), 1000)
        elif t.reason == "buyer_short":
            exact = Fraction((min(t.energy_wh, t.seller_share_wh) - t.delivered_wh)
                             * max(0, t.price - tariffs[t.seller]["feed_in_price"]), 1000)
        else:
            exact = 0
        assert abs(extra - exact) <= 1
    for side, table, field in (("export_wh", sold, "seller_share_wh"), ("import_wh", bought, "buyer_share_wh")):
        for k, ts in table.items():
            measured = readings[k][side]
            assert sum(t.delivered_wh for t in ts) <= measured
            assert sum(getattr(t, field) for t in ts) == measured  # the split loses nothing
            whole = sum(t.energy_wh for t in ts)
            for t in ts:  # and each share is the exact pro-rata value rounded down or up
                exact = Fraction(measured * t.energy_wh, whole)
                assert exact - 1 < getattr(t, field) < exact + 1

    # the same input in another order gives the same settlement
    assert settle(START, *shuffled(args, rnd), interval_min=15) == s


@settings(max_examples=200, deadline=None)
@given(neighbourhoods(), st.data())
def test_random_bad_values_raise_settlement_error(args, data):
    trades, readings, previous, limits, tariffs = args
    assume(readings)
    bad = data.draw(st.sampled_from([-1, 2**64, 1.5, "7", None, True, b"x"]))
    k = data.draw(st.sampled_from(sorted(readings)))
    where = data.draw(st.sampled_from(["reading", "limits", "tariffs"]))
    if where == "reading":
        readings[k] = dict(readings[k], **{data.draw(st.sampled_from(["ts", "interval_min",
                                                                      "import_register_wh"])): bad})
    elif where == "limits":
        limits[k] = dict(limits[k], max_export_w=bad)
    else:
        tariffs[k] = dict(tariffs[k], retail_price=bad)
    with pytest.raises(SettlementError) as e:
        settle(START, trades, readings, previous, limits, tariffs, interval_min=15)
    assert e.value.reason in ("type", "value", "previous")


def test_ten_thousand_trades_settle_in_linear_work():
    rnd = random.Random(6)
    kids = [i.to_bytes(8, "big") for i in range(2000)]
    readings = {k: reading(rnd.randrange(2000), rnd.randrange(1000)) for k in kids}
    trades = []
    for i in range(10000):
        s, b = rnd.sample(kids, 2)
        trades.append((i, s, b, rnd.randrange(1, 500), rnd.randrange(100000, 250000)))
    limits = {k: LIMITS for k in kids}
    tariffs = {k: TARIFF for k in kids}
    s = settle(START, trades, readings, None, limits, tariffs, interval_min=15)
    assert len(s.trades) == 10000 and sum(p.tokens for p in s.postings) == 0
