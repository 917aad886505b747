"""host_tools/hub/market.py: the interval market (docs/hub.md, "The market").

The core check compares clear() with a brute-force reference written here
from the rules alone: it evaluates every household's curve at every integer
price of a small book, instead of sorting tranches and bisecting.
"""

import random
from fractions import Fraction
from math import floor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host_tools.hub.market import BUY, SELL, Clearing, Limits, MarketError, Order, Trade, Trim, clear, pro_rata

U32 = 2**32 - 1


def kid(n):
    return bytes([n]) * 8


# --- the reference: every price tried, curves as functions --------------------

def wants(order, price):
    """Wh an order takes at `price` by its steps alone."""
    if order.side == BUY:
        return sum(q for p, q in order.steps if p >= price)
    return sum(q for p, q in order.steps if p <= price)


def share(total, weights, keys):
    """Largest remainder with exact fractions; equal remainders: smaller key."""
    whole = sum(weights)
    if not whole:
        return [0] * len(weights)
    exact = [Fraction(total * w, whole) for w in weights]
    base = [floor(e) for e in exact]
    best = sorted(range(len(weights)), key=lambda i: (-(exact[i] - base[i]), keys[i]))
    for i in best[:total - sum(base)]:
        base[i] += 1
    return base


def reference(orders, limits, top):
    """(price, volume, fills, cap trims, feeder trims) from first principles.
    Prices are tried from 0 to top; the book's prices must be below top."""
    prices = range(0, top + 1)
    caps = {BUY: limits.import_wh or {}, SELL: limits.export_wh or {}}

    # A household's curve is min(cap, its orders' curves); its orders split it:
    # unchanged at prices better than where the cap binds, frozen from there on,
    # the binding level shared pro rata.
    curve = {}
    for o in orders:
        curve[o] = lambda p, o=o: wants(o, p)
    for k in sorted({o.kid for o in orders}):
        own = sorted(o for o in orders if o.kid == k)
        side = own[0].side
        if k not in caps[side]:
            continue
        cap = caps[side][k]

        def total(p, own=own):
            return sum(wants(o, p) for o in own)

        binding = [p for p in prices if total(p) > cap]
        if not binding:
            continue
        p_star = min(binding) if side == SELL else max(binding)
        before = p_star - 1 if side == SELL else p_star + 1
        shares = share(cap - total(before), [wants(o, p_star) - wants(o, before) for o in own],
                       [(o.kid, o.seq) for o in own])
        for o, extra in zip(own, shares):
            frozen = wants(o, before) + extra
            if side == SELL:
                curve[o] = lambda p, o=o, frozen=frozen, p_star=p_star: wants(o, p) if p < p_star else frozen
            else:
                curve[o] = lambda p, o=o, frozen=frozen, p_star=p_star: wants(o, p) if p > p_star else frozen

    def supply(p):
        return sum(curve[o](p) for o in orders if o.side == SELL) if p >= 0 else 0

    def demand(p):
        return sum(curve[o](p) for o in orders if o.side == BUY)

    cap_trims = {}
    for o in orders:
        cut = wants(o, top if o.side == SELL else 0) - curve[o](top if o.side == SELL else 0)
        if cut:
            cap_trims[(o.kid, o.seq)] = cut

    volume = max(min(supply(p), demand(p)) for p in prices)
    fills = {(o.kid, o.seq): 0 for o in orders}
    if not volume:
        return None, 0, fills, cap_trims, {}
    ask_m = min(p for p in prices if supply(p) >= volume)
    bid_m = max(p for p in prices if demand(p) >= volume)
    price = (ask_m + bid_m) // 2
    for side, margin, better_p, willing in ((BUY, bid_m, bid_m + 1, demand), (SELL, ask_m, ask_m - 1, supply)):
        own = sorted(o for o in orders if o.side == side)
        extra = share(volume - willing(better_p),
                      [curve[o](margin) - (curve[o](better_p) if better_p >= 0 else 0) for o in own],
                      [(o.kid, o.seq) for o in own])
        for o, e in zip(own, extra):
            fills[(o.kid, o.seq)] = (curve[o](better_p) if better_p >= 0 else 0) + e
    feeder_trims = {}
    if limits.feeder_wh is not None and volume > limits.feeder_wh:
        for side in (BUY, SELL):
            keys = sorted((o.kid, o.seq) for o in orders if o.side == side)
            kept = share(limits.feeder_wh, [fills[k] for k in keys], keys)
            for k, keep in zip(keys, kept):
                if keep < fills[k]:
                    feeder_trims[k] = fills[k] - keep
                    fills[k] = keep
        volume = limits.feeder_wh
        if not volume:
            price = None
    return price, volume, fills, cap_trims, feeder_trims


def unit_pairing(orders, fills):
    """The trades as the pairing rule says, one Wh at a time: the sellers'
    Wh in (kid, seq) order meet the buyers' Wh in (kid, seq) order."""
    def units(side):
        return [(o.kid, o.seq) for o in sorted(orders) if o.side == side for _ in range(fills[(o.kid, o.seq)])]
    trades = []
    for s, b in zip(units(SELL), units(BUY)):
        if trades and trades[-1][:4] == (*s, *b):
            trades[-1] = trades[-1][:4] + (trades[-1][4] + 1,)
        else:
            trades.append((*s, *b, 1))
    return trades


# --- strategies ------------------------------------------------------------

@st.composite
def small_books(draw, max_price=12):
    """<= 6 orders of <= 3 steps from 4 households (so a household may have
    several), small prices and Wh; limits that often bind."""
    sides = [BUY, SELL] + draw(st.lists(st.integers(0, 1), min_size=2, max_size=2))
    keys = draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=6, unique=True))
    orders = []
    for h, seq in keys:
        side = sides[h]
        low, high = (0, max_price - 2) if side == SELL else (2, max_price)  # so that the sides often cross
        steps = draw(st.lists(st.tuples(st.integers(low, high), st.integers(0, 30)), min_size=1, max_size=3))
        if not sum(q for _, q in steps):
            steps[0] = (steps[0][0], 1)
        limit = max(p for p, _ in steps) if side == SELL else min(p for p, _ in steps)
        orders.append(Order.from_fields(kid(h), seq, side, sum(q for _, q in steps), limit, steps))
    caps = st.none() | st.dictionaries(st.sampled_from([kid(h) for h in range(4)]), st.integers(0, 60))
    limits = Limits(feeder_wh=draw(st.none() | st.integers(0, 50)), import_wh=draw(caps), export_wh=draw(caps))
    return orders, limits


@st.composite
def big_books(draw):
    """Up to 60 orders, prices anywhere in 0..2^32-1 but clustered so they
    cross, up to 8 steps, one side per household."""
    n = draw(st.integers(0, 60))
    seed = draw(st.integers(0, 2**32))
    rng = random.Random(seed)
    base = rng.choice([0, 1000, U32 - 5000])
    orders = []
    for i in range(n):
        h = rng.randrange(30)
        side = h % 2
        steps = [(base + rng.randrange(0, 5000), rng.randrange(1, 10_000)) for _ in range(rng.randint(1, 8))]
        limit = max(p for p, _ in steps) if side == SELL else min(p for p, _ in steps)
        orders.append(Order.from_fields(kid(h), i, side, sum(q for _, q in steps), limit, steps))
    caps = {kid(h): rng.randrange(0, 30_000) for h in range(30) if rng.random() < 0.3}
    limits = Limits(feeder_wh=draw(st.none() | st.integers(0, 200_000)),
                    import_wh={k: c for k, c in caps.items() if k[0] % 2 == 0},
                    export_wh={k: c for k, c in caps.items() if k[0] % 2 == 1})
    return orders, limits


# --- against the reference ---------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(small_books())
def test_matches_brute_force_reference(book):
    orders, limits = book
    got = clear(orders, limits)
    price, volume, fills, cap_trims, feeder_trims = reference(orders, limits, top=14)
    assert (got.price, got.volume_wh) == (price, volume)
    assert got.fills == fills
    assert {(t.kid, t.seq): t.wh for t in got.trimmed if t.cause != "feeder"} == cap_trims
    assert {(t.kid, t.seq): t.wh for t in got.trimmed if t.cause == "feeder"} == feeder_trims
    assert [tuple(t) for t in got.trades] == unit_pairing(orders, got.fills)


# --- properties on bigger books ----------------------------------------------

def check_invariants(orders, limits, c):
    by_key = {(o.kid, o.seq): o for o in orders}
    assert list(c.fills) == sorted(by_key)
    buys = sum(f for k, f in c.fills.items() if by_key[k].side == BUY)
    sells = sum(f for k, f in c.fills.items() if by_key[k].side == SELL)
    assert buys == sells == c.volume_wh
    assert all(type(f) is int and f >= 0 for f in c.fills.values())
    if c.volume_wh:
        assert type(c.price) is int and 0 <= c.price <= U32
        for k, f in c.fills.items():  # nobody trades beyond what it wants at the price
            assert f <= wants(by_key[k], c.price)
    else:
        assert c.price is None and not c.trades
    if limits.feeder_wh is not None:
        assert c.volume_wh <= limits.feeder_wh
    for caps, side in ((limits.import_wh, BUY), (limits.export_wh, SELL)):
        for k, cap in (caps or {}).items():
            assert sum(f for key, f in c.fills.items() if key[0] == k and by_key[key].side == side) <= cap
    per_order = dict.fromkeys(c.fills, 0)
    for t in c.trades:
        assert type(t) is Trade and t.wh >= 1 and t.wh <= U32
        assert by_key[(t.seller, t.seller_seq)].side == SELL and by_key[(t.buyer, t.buyer_seq)].side == BUY
        per_order[(t.seller, t.seller_seq)] += t.wh
        per_order[(t.buyer, t.buyer_seq)] += t.wh
    assert per_order == c.fills
    traders = sum(1 for f in c.fills.values() if f)
    assert len(c.trades) <= max(0, traders - 1)
    assert all(type(t) is Trim and t.wh > 0 for t in c.trimmed)


@settings(max_examples=150, deadline=None)
@given(big_books(), st.randoms(use_true_random=False))
def test_invariants_and_order_independence(book, rnd):
    orders, limits = book
    c = clear(orders, limits)
    check_invariants(orders, limits, c)
    shuffled = orders[:]
    rnd.shuffle(shuffled)
    assert clear(shuffled, limits) == c
    assert clear(reversed(orders), limits) == c


@settings(max_examples=150, deadline=None)
@given(big_books())
def test_price_priority_without_limits(book):
    """Some marginal bid b and ask a: every buy gets at least what it wants
    above b and at most what it wants at b; every sell likewise around a."""
    orders, _ = book
    c = clear(orders)
    check_invariants(orders, Limits(), c)
    if not c.volume_wh:
        return
    for side, step in ((BUY, 1), (SELL, -1)):
        own = [o for o in orders if o.side == side]
        margins = {p for o in own for p, _ in o.steps}
        assert any(all(wants(o, m + step) <= c.fills[(o.kid, o.seq)] <= wants(o, m) for o in own)
                   for m in margins)
    # and no price trades more: the volume is the most any one price can trade
    candidates = {p for o in orders for p, _ in o.steps}
    most = max(min(sum(wants(o, p) for o in orders if o.side == BUY),
                   sum(wants(o, p) for o in orders if o.side == SELL)) for p in candidates)
    assert c.volume_wh == most


@settings(max_examples=100, deadline=None)
@given(big_books())
def test_feeder_only_cuts(book):
    orders, limits = book
    loose = clear(orders, limits._replace(feeder_wh=None))
    tight = clear(orders, limits)
    cut = {(t.kid, t.seq): t.wh for t in tight.trimmed if t.cause == "feeder"}
    assert tight.price == (loose.price if tight.volume_wh else None)
    for k, f in tight.fills.items():
        assert 0 <= f <= loose.fills[k]
        assert loose.fills[k] - f == cut.get(k, 0)


# --- worked examples -----------------------------------------------------------

A, B, C, D, E = (kid(n) for n in (0xA, 0xB, 0xC, 0xD, 0xE))


def example_book():
    """The worked example of docs/hub.md, "The market"."""
    return [
        Order.from_fields(A, 1, SELL, 1500, 180000, [[150000, 500], [180000, 1000]]),
        Order.from_fields(B, 7, SELL, 800, 170000),
        Order.from_fields(C, 3, BUY, 1000, 175000, [[175000, 400], [200000, 600]]),
        Order.from_fields(D, 9, BUY, 900, 165000, [[190000, 300], [165000, 600]]),
        Order.from_fields(E, 2, BUY, 500, 120000),
    ]


def test_worked_example():
    c = clear(example_book())
    # 1300 Wh trade at any price in [170000, 175000]: B's ask and C's second bid
    assert c.volume_wh == 1300 and c.price == 172500
    assert c.fills == {(A, 1): 500, (B, 7): 800, (C, 3): 1000, (D, 9): 300, (E, 2): 0}
    assert c.trades == [Trade(A, 1, C, 3, 500), Trade(B, 7, C, 3, 500), Trade(B, 7, D, 9, 300)]
    assert c.trimmed == []


def test_worked_example_with_limits():
    c = clear(example_book(), Limits(feeder_wh=1000, import_wh={C: 700}))
    # C's cap keeps its 200000 tranche (600) and 100 of its 175000 one; the
    # book then clears 1000 Wh, which the feeder allows
    assert c.trimmed == [Trim(C, 3, "import_cap", 300)]
    assert c.volume_wh == 1000 and c.price == 172500
    assert c.fills == {(A, 1): 500, (B, 7): 500, (C, 3): 700, (D, 9): 300, (E, 2): 0}
    c = clear(example_book(), Limits(feeder_wh=650))
    assert c.volume_wh == 650 and c.price == 172500
    assert c.fills == {(A, 1): 250, (B, 7): 400, (C, 3): 500, (D, 9): 150, (E, 2): 0}
    assert [t.cause for t in c.trimmed] == ["feeder"] * 4


def test_marginal_tie_is_pro_rata_with_largest_remainder():
    # 3 sellers at the same price share 10 Wh of demand: 10/3 each -> 4, 3, 3,
    # the extra Wh to the smallest (kid, seq) as all remainders are equal
    orders = [Order.from_fields(kid(n), 0, SELL, 5, 100) for n in (3, 1, 2)]
    orders.append(Order.from_fields(kid(9), 0, BUY, 10, 100))
    c = clear(orders)
    assert [c.fills[(kid(n), 0)] for n in (1, 2, 3)] == [4, 3, 3]
    assert c.price == 100


def test_price_midpoint_rounds_down():
    c = clear([Order.from_fields(A, 0, SELL, 10, 100), Order.from_fields(B, 0, BUY, 10, 201)])
    assert c.price == 150 and c.volume_wh == 10


def test_no_cross_no_trade():
    c = clear([Order.from_fields(A, 0, SELL, 10, 101), Order.from_fields(B, 0, BUY, 10, 100)])
    assert c == Clearing(None, 0, {(A, 0): 0, (B, 0): 0}, [], [])
    assert clear([]) == Clearing(None, 0, {}, [], [])


def test_zero_feeder_closes_the_market():
    c = clear([Order.from_fields(A, 0, SELL, 10, 100), Order.from_fields(B, 0, BUY, 10, 100)], Limits(feeder_wh=0))
    assert c.price is None and c.volume_wh == 0 and c.trades == []


def test_agent_orders_parse():
    # docs/protocol.md's ORDER vector and docs/trading.md's agent example
    o = Order.from_fields(kid(1), 0x413, SELL, 1500, 180000, [[150000, 500], [180000, 1000]])
    assert o.steps == ((150000, 500), (180000, 1000)) and o.energy_wh == 1500
    o = Order.from_fields(kid(1), 1, SELL, 425, 190000, [[135000, 107], [153333, 106], [171666, 106], [190000, 106]])
    assert len(o.steps) == 4
    # steps in any order, equal prices merged, zero steps dropped
    o = Order.from_fields(kid(1), 2, BUY, 30, 5, [[9, 10], [5, 0], [7, 10], [9, 10]])
    assert o.steps == ((7, 10), (9, 20))


# --- bad input ---------------------------------------------------------------------

@pytest.mark.parametrize("args, reason", [
    ((b"short", 0, 0, 10, 5), "kid"),
    ((bytearray(8), 0, 0, 10, 5), "kid"),
    ((A, -1, 0, 10, 5), "seq"),
    ((A, 2**64, 0, 10, 5), "seq"),
    ((A, True, 0, 10, 5), "seq"),
    ((A, 0, 2, 10, 5), "side"),
    ((A, 0, False, 10, 5), "side"),
    ((A, 0, 0, 0, 5), "energy"),
    ((A, 0, 0, 2**32, 5), "energy"),
    ((A, 0, 0, 10.0, 5), "energy"),
    ((A, 0, 0, 10, -1), "price"),
    ((A, 0, 0, 10, 2**32), "price"),
    ((A, 0, 0, 10, 5, []), "steps"),
    ((A, 0, 0, 10, 5, [[5, 1]] * 9 + [[6, 1]]), "steps"),
    ((A, 0, 0, 10, 5, [[5, 10, 1]]), "steps"),
    ((A, 0, 0, 10, 5, "55"), "steps"),
    ((A, 0, 0, 10, 5, [[5, -10]]), "steps"),
    ((A, 0, 0, 10, 5, [[2**32, 10]]), "price"),
    ((A, 0, 0, 10, 5, [[5, 9]]), "energy"),
    ((A, 0, 0, 10, 5, [[5, 0]] * 2), "energy"),
    ((A, 0, BUY, 10, 6, [[5, 5], [9, 5]]), "limit_price"),
    ((A, 0, SELL, 10, 8, [[5, 5], [9, 5]]), "limit_price"),
])
def test_bad_order_fields(args, reason):
    with pytest.raises(MarketError) as e:
        Order.from_fields(*args)
    assert e.value.reason == reason and str(e.value).startswith(reason)


@pytest.mark.parametrize("steps, reason", [
    (((5, 1), (5, 1)), "steps"),
    (((6, 1), (5, 1)), "steps"),
    (((5, 0),), "steps"),
    ([(5, 1)], "steps"),
    (((5, 2**32 - 1), (6, 1)), "energy"),
    (((-1, 1),), "price"),
])
def test_orders_are_checked_when_made(steps, reason):
    with pytest.raises(MarketError) as e:
        Order(A, 0, BUY, steps)
    assert e.value.reason == reason and e.value.order == (A, 0)
    good = Order(A, 0, BUY, ((5, 1),))
    with pytest.raises(MarketError):
        good._replace(steps=steps)


def test_bad_books():
    sell = Order.from_fields(A, 1, SELL, 10, 5)
    with pytest.raises(MarketError) as e:
        clear([sell, (A, 2, SELL, ((5, 1),))])
    assert e.value.reason == "order"
    with pytest.raises(MarketError) as e:
        clear([sell, Order.from_fields(B, 1, BUY, 10, 5), sell])
    assert e.value.reason == "duplicate" and e.value.order == (A, 1)
    with pytest.raises(MarketError) as e:
        clear([sell, Order.from_fields(A, 2, BUY, 10, 5)])
    assert e.value.reason == "both_sides" and e.value.order == (A, 2)


@pytest.mark.parametrize("limits", [
    {"feeder_wh": 10},
    Limits(feeder_wh=-1),
    Limits(feeder_wh=1.5),
    Limits(import_wh=[(A, 10)]),
    Limits(import_wh={b"short": 10}),
    Limits(export_wh={A: -5}),
    Limits(export_wh={A: True}),
])
def test_bad_limits(limits):
    with pytest.raises(MarketError) as e:
        clear([], limits)
    assert e.value.reason == "limits"


def test_pro_rata():
    assert pro_rata(2, [1, 1, 1]) == [1, 1, 0]  # equal remainders: the earlier entries
    assert pro_rata(7, [7, 3]) == [5, 2]  # 4.9 and 2.1
    assert pro_rata(0, [5, 5]) == [0, 0]
    assert pro_rata(10, [4, 6]) == [4, 6]
    assert pro_rata(5, [1, 3, 1, 3]) == [1, 2, 0, 2]  # 0.625, 1.875, 0.625, 1.875


def test_ten_thousand_orders_clear():
    """The bench's book clears within the rules (the time is bench/market_clear.py's)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from market_clear import book

    orders, limits = book(2_000)
    check_invariants(orders, limits, clear(orders, limits))
