"""The hub's interval market: a sealed-bid double auction at gate closure with
one uniform price (docs/hub.md, "The market", has the rules in full and an example).

- An order is a set of tranches (price µ/kWh, Wh): a buy tranche trades at any
  price <= its price, a sell tranche at any price >= its price.
- Household caps (import, export) bound a household's curve before clearing:
  it offers min(cap, curve(p)) at each price p.
- Volume V = max over p of min(demand(p), supply(p)); the prices that trade V
  form [ask_m, bid_m], and the price is k = 0.5 between them, rounded down.
- Price priority: bids above bid_m and asks below ask_m fill completely, the
  tranches at exactly bid_m (ask_m) share the rest pro rata.
- A feeder limit below V scales each side's fills pro rata down to it.
- Every pro rata split is in whole Wh by largest remainder; equal remainders
  go to the smaller (kid, seq). Trades pair sellers and buyers in (kid, seq)
  order.
Integers only, no I/O, no clock; O(n log n) in the number of tranches.
"""

from bisect import bisect_left, bisect_right
from itertools import accumulate, chain, compress, repeat
from operator import itemgetter, neg, pos
from typing import NamedTuple

BUY, SELL = 0, 1
MAX_STEPS = 8  # docs/protocol.md, ORDER field 9
U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF
_KEY = itemgetter(0, 1)  # an Order's (kid, seq)
_PRICE, _WH = itemgetter(0), itemgetter(1)  # a step's


class MarketError(ValueError):
    """Bad input. `reason` is one of: order, kid, seq, side, energy, price,
    steps, limit_price, duplicate, both_sides, limits. `order` is the
    offending order's (kid, seq) when there is one, so a caller can drop it."""

    def __init__(self, reason, message, order=None):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.order = order


def _uint(x, hi):
    return type(x) is int and 0 <= x <= hi  # type(): a bool is not a quantity


class _OrderFields(NamedTuple):
    kid: bytes
    seq: int
    side: int
    steps: tuple


class Order(_OrderFields):
    """One ORDER of one interval: kid (8 bytes), seq, side (0 buy, 1 sell)
    and steps, its curve: a tuple of 1-8 (price, wh) tuples, prices strictly
    rising, every wh >= 1, total wh <= 2^32-1. An Order is checked when it is
    made and is immutable, so an Order that exists is a valid one."""

    __slots__ = ()

    def __new__(cls, kid, seq, side, steps):
        _check_order(kid, seq, side, steps)
        return super().__new__(cls, kid, seq, side, steps)

    @classmethod
    def _make(cls, iterable):  # _replace() goes through here: check it too
        return cls(*iterable)

    @classmethod
    def from_fields(cls, kid, seq, side, energy_wh, limit_price, steps=None):
        """From an ORDER's fields (docs/protocol.md type 2). Without steps the
        curve is one tranche (limit_price, energy_wh). With steps, the steps
        are the curve: their Wh must add up to energy_wh, and limit_price must
        be a price at which the whole curve trades (a sell's at or above its
        highest step, a buy's at or below its lowest), so a hub that ignores
        steps and one that uses them agree the order is honest. Steps may come
        in any order; equal prices merge and zero-Wh steps are dropped."""
        key = (kid, seq) if type(kid) is bytes else None
        _check_ids(kid, seq, side)
        if not _uint(energy_wh, U32) or energy_wh == 0:
            raise MarketError("energy", f"energy_wh {energy_wh!r} is not in 1..2^32-1", key)
        if not _uint(limit_price, U32):
            raise MarketError("price", f"limit_price {limit_price!r} is not in 0..2^32-1", key)
        if steps is None:
            return cls(kid, seq, side, ((limit_price, energy_wh),))
        if not isinstance(steps, (list, tuple)) or not 1 <= len(steps) <= MAX_STEPS:
            raise MarketError("steps", f"steps must be a list of 1..{MAX_STEPS} [price, wh] pairs", key)
        level = {}
        for step in steps:
            if not isinstance(step, (list, tuple)) or len(step) != 2:
                raise MarketError("steps", f"step {step!r} is not a [price, wh] pair", key)
            price, wh = step
            if not _uint(price, U32):
                raise MarketError("price", f"step price {price!r} is not in 0..2^32-1", key)
            if not _uint(wh, U32):
                raise MarketError("steps", f"step wh {wh!r} is not in 0..2^32-1", key)
            level[price] = level.get(price, 0) + wh
        total = sum(level.values())
        if total != energy_wh:
            raise MarketError("energy", f"steps add up to {total} Wh, energy_wh is {energy_wh}", key)
        curve = tuple(sorted((p, q) for p, q in level.items() if q))
        if side == SELL and limit_price < curve[-1][0] or side == BUY and limit_price > curve[0][0]:
            raise MarketError("limit_price", f"limit_price {limit_price} does not take the whole curve", key)
        return cls(kid, seq, side, curve)

    @property
    def energy_wh(self):
        return sum(q for _, q in self.steps)


class Limits(NamedTuple):
    """Network limits for one interval, in Wh; None is unlimited.
    feeder_wh: the most energy all trades together may move;
    import_wh / export_wh: {kid: Wh}, a household's most bought / sold
    (a connection's fuse times the interval, say)."""

    feeder_wh: int = None
    import_wh: dict = None
    export_wh: dict = None


class Trade(NamedTuple):
    """One TRADE message's parties and energy (the price is the clearing's)."""

    seller: bytes
    seller_seq: int
    buyer: bytes
    buyer_seq: int
    wh: int


class Trim(NamedTuple):
    """What a limit cut from one order. cause "export_cap" / "import_cap":
    Wh of the offer removed before clearing; "feeder": Wh of the fill removed."""

    kid: bytes
    seq: int
    cause: str
    wh: int


class Clearing(NamedTuple):
    """price: µ/kWh, None when nothing trades; volume_wh: energy traded;
    fills: {(kid, seq): Wh} for every order, in (kid, seq) order; trades and
    trimmed: lists, in the order docs/hub.md ("The market") gives."""

    price: int
    volume_wh: int
    fills: dict
    trades: list
    trimmed: list


def _check_ids(kid, seq, side):
    key = (kid, seq) if type(kid) is bytes else None
    if type(kid) is not bytes or len(kid) != 8:
        raise MarketError("kid", f"kid {kid!r} is not 8 bytes")
    if not _uint(seq, U64):
        raise MarketError("seq", f"seq {seq!r} is not in 0..2^64-1", key)
    if side != BUY and side != SELL or type(side) is not int:
        raise MarketError("side", f"side {side!r} is not 0 (buy) or 1 (sell)", key)


def _check_order(kid, seq, side, steps):
    _check_ids(kid, seq, side)
    key = (kid, seq)
    if type(steps) is not tuple or not 1 <= len(steps) <= MAX_STEPS:
        raise MarketError("steps", f"steps must be a tuple of 1..{MAX_STEPS} (price, wh) pairs", key)
    last = -1
    total = 0
    for step in steps:
        if type(step) is not tuple or len(step) != 2:
            raise MarketError("steps", f"step {step!r} is not a (price, wh) pair", key)
        price, wh = step
        if not _uint(price, U32):
            raise MarketError("price", f"step price {price!r} is not in 0..2^32-1", key)
        if price <= last:
            raise MarketError("steps", "step prices must rise strictly (use Order.from_fields)", key)
        if not _uint(wh, U32) or wh == 0:
            raise MarketError("steps", f"step wh {wh!r} is not in 1..2^32-1", key)
        last = price
        total += wh
    if total > U32:
        raise MarketError("energy", f"steps add up to {total} Wh, over 2^32-1", key)


def _check_limits(limits):
    if type(limits) is not Limits:
        raise MarketError("limits", f"{type(limits).__name__} is not a Limits")
    if limits.feeder_wh is not None and not _uint(limits.feeder_wh, U64):
        raise MarketError("limits", f"feeder_wh {limits.feeder_wh!r} is not a Wh count")
    for name in ("import_wh", "export_wh"):
        caps = getattr(limits, name)
        if caps is None:
            continue
        if not isinstance(caps, dict):
            raise MarketError("limits", f"{name} is not a dict of kid -> Wh")
        for kid, cap in caps.items():
            if type(kid) is not bytes or len(kid) != 8 or not _uint(cap, U64):
                raise MarketError("limits", f"{name}[{kid!r}] = {cap!r} is not an 8-byte kid -> Wh")


def pro_rata(total, weights):
    """Split `total` (0 <= total <= sum(weights)) in proportion to `weights`,
    in whole units: each gets floor(total * w / W), and the units left over go
    one each to the largest remainders, equal remainders to the earlier entry
    (callers list entries in (kid, seq) order). So the shares add up to
    total, and none exceeds its weight."""
    whole = sum(weights)
    if total >= whole:
        return list(weights)
    if len(weights) == 1:
        return [total]
    shares = [total * w // whole for w in weights]
    rests = [total * w % whole for w in weights]
    left = total - sum(shares)
    if left:
        # sorted() is stable, with reverse too: equal remainders keep their order
        for i in sorted(range(len(rests)), key=rests.__getitem__, reverse=True)[:left]:
            shares[i] += 1
    return shares


class _Side:
    """One side's tranches as parallel lists: price, Wh, owning order index
    (the orders at `index` of the (kid, seq)-sorted list); `households` maps
    each household that has a cap to its orders' (index, first tranche, tranches)."""

    def __init__(self, orders, index, caps):
        steps = [orders[i].steps for i in index]
        self.index = index
        counts = list(map(len, steps))
        # chain and repeat keep these loops in C: 10k orders are ~45k tranches
        tranches = list(chain.from_iterable(steps))
        self.price = list(map(_PRICE, tranches))
        self.wh = list(map(_WH, tranches))
        self.owner = list(chain.from_iterable(map(repeat, index, counts)))
        self.caps = caps or {}
        self.households = {}
        if self.caps:
            for i, start, n in zip(index, accumulate(counts, initial=0), counts):
                if orders[i].kid in self.caps:
                    self.households.setdefault(orders[i].kid, []).append((i, start, n))


def _apply_caps(side, orders, cause, trimmed):
    """A household's curve becomes min(cap, curve): its tranches keep their
    place in price priority until the cap is reached, the tranches at the
    price where it binds share what is left pro rata, later ones get 0."""
    dearest_first = cause == "import_cap"  # a buyer's best tranches are its highest
    price, wh, owner = side.price, side.wh, side.owner
    for kid, own in side.households.items():  # households are independent; trimmed is sorted after
        room = side.caps[kid]
        if len(own) == 1:  # the common case: an order's prices rise, one tranche per level
            i, start, n = own[0]
            if sum(wh[start:start + n]) <= room:
                continue
            cut = 0
            for t in range(start + n - 1, start - 1, -1) if dearest_first else range(start, start + n):
                if wh[t] > room:
                    cut += wh[t] - room
                    wh[t] = room
                room -= wh[t]
            trimmed.append(Trim(kid, orders[i].seq, cause, cut))
            continue
        ts = [t for _, start, n in own for t in range(start, start + n)]
        if sum(wh[t] for t in ts) <= room:
            continue
        # ts is in (kid, seq) order and the sort is stable (reverse too): ties stay in that order
        ts.sort(key=price.__getitem__, reverse=dearest_first)
        cut = {}
        k = 0
        while k < len(ts):  # one price level at a time, best first
            j = k + 1
            while j < len(ts) and price[ts[j]] == price[ts[k]]:
                j += 1
            level = ts[k:j]
            offered = [wh[t] for t in level]
            if sum(offered) > room:
                kept = pro_rata(room, offered)  # level is in (kid, seq) order
                for t, q, keep in zip(level + ts[j:], offered + [wh[t] for t in ts[j:]], kept + [0] * len(ts)):
                    if keep < q:
                        cut[owner[t]] = cut.get(owner[t], 0) + q - keep
                        wh[t] = keep
                break
            room -= sum(offered)
            k = j
        trimmed += [Trim(kid, orders[i].seq, cause, cut[i]) for i in sorted(cut)]


class _Curve:
    """A side's cumulative curve in price priority (asks cheapest first,
    bids dearest first): willing(p) is the Wh willing to trade at price p."""

    def __init__(self, side, bids):
        price = side.price
        keep = sorted(range(len(price)), key=price.__getitem__, reverse=bids)
        if side.households:  # caps may have left tranches with nothing
            keep = list(compress(keep, map(side.wh.__getitem__, keep)))
        self.order = keep
        # Bids are searched on negated prices so that both lists ascend.
        self.key = list(map(neg if bids else pos, map(price.__getitem__, keep)))
        self.cum = list(accumulate(map(side.wh.__getitem__, keep)))
        self.bids = bids

    def willing(self, price):
        n = bisect_right(self.key, -price if self.bids else price)
        return self.cum[n - 1] if n else 0

    def marginal(self, volume):
        """The worst price in priority at which `volume` is reached."""
        k = self.key[bisect_left(self.cum, volume)]
        return -k if self.bids else k


def _fill(side, curve, margin, volume, fills):
    """Tranches better than `margin` fill completely, those at it share the rest."""
    wh, owner = side.wh, side.owner
    better = curve.willing(margin + 1 if curve.bids else margin - 1)
    first = bisect_right(curve.cum, better)  # cum rises strictly: every tranche has Wh
    for t in curve.order[:first]:
        fills[owner[t]] += wh[t]
    level = curve.order[first:bisect_right(curve.key, -margin if curve.bids else margin)]
    # level is in (kid, seq) order: the stable sort kept tranches of one price in owner order
    shares = pro_rata(volume - better, [wh[t] for t in level])
    for t, share in zip(level, shares):
        fills[owner[t]] += share


def _volume(ask_curve, bid_curve):
    """max over prices p of min(supply(p), demand(p)). It is reached at a
    tranche's price (between two, supply is the lower one's and demand the
    upper one's). On either side's sorted prices supply - demand only grows,
    so bisect for the last price where supply <= demand: the best of those
    prices is there or at the next one."""
    best = 0
    n_asks, n_bids = len(ask_curve.key), len(bid_curve.key)
    for n, price_at in ((n_asks, ask_curve.key.__getitem__),
                        (n_bids, lambda j: -bid_curve.key[n_bids - 1 - j])):
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            if ask_curve.willing(price_at(mid)) <= bid_curve.willing(price_at(mid)):
                lo = mid + 1
            else:
                hi = mid
        if lo:
            best = max(best, ask_curve.willing(price_at(lo - 1)))
        if lo < n:
            best = max(best, bid_curve.willing(price_at(lo)))
    return best


def clear(orders, limits=Limits()):
    """Clear one interval's orders (any iterable of Order) -> Clearing.
    Raises MarketError."""
    _check_limits(limits)
    orders = list(orders)
    for order in orders:
        if type(order) is not Order:
            raise MarketError("order", f"{type(order).__name__} is not an Order")
    orders.sort()  # by (kid, seq): all below is independent of the input's order
    for a, b in zip(orders, orders[1:]):  # a household's orders are next to each other now
        if a.kid == b.kid:
            if a.seq == b.seq:
                raise MarketError("duplicate", f"{a.kid.hex()} seq {a.seq} appears twice", (a.kid, a.seq))
            if a.side != b.side:
                raise MarketError("both_sides", f"{b.kid.hex()} both buys and sells", (b.kid, b.seq))
    bids = _Side(orders, [i for i, order in enumerate(orders) if order.side == BUY], limits.import_wh)
    asks = _Side(orders, [i for i, order in enumerate(orders) if order.side == SELL], limits.export_wh)
    trimmed = []
    _apply_caps(asks, orders, "export_cap", trimmed)
    _apply_caps(bids, orders, "import_cap", trimmed)
    trimmed.sort()  # by (kid, seq): a household has one side, so one cause

    fills = [0] * len(orders)
    price = None
    bid_curve, ask_curve = _Curve(bids, True), _Curve(asks, False)
    volume = _volume(ask_curve, bid_curve) if bid_curve.cum and ask_curve.cum else 0
    if volume:
        ask_m, bid_m = ask_curve.marginal(volume), bid_curve.marginal(volume)
        price = (ask_m + bid_m) // 2  # k = 0.5, rounded down: inside [ask_m, bid_m]
        _fill(bids, bid_curve, bid_m, volume, fills)
        _fill(asks, ask_curve, ask_m, volume, fills)
        if limits.feeder_wh is not None and volume > limits.feeder_wh:
            cut = {}
            for side in (bids, asks):
                idx = [i for i in side.index if fills[i]]
                kept = pro_rata(limits.feeder_wh, [fills[i] for i in idx])
                for i, keep in zip(idx, kept):
                    if keep < fills[i]:
                        cut[i] = fills[i] - keep
                        fills[i] = keep
            new = tuple.__new__  # Trim's own __new__ is Python code, and this makes thousands
            trimmed += [new(Trim, (*orders[i][:2], "feeder", cut[i])) for i in sorted(cut)]
            volume = limits.feeder_wh
            if not volume:
                price = None
    trades = _pair(orders, fills, asks.index, bids.index)
    return Clearing(price, volume, dict(zip(map(_KEY, orders), fills)), trades, trimmed)


def _pair(orders, fills, sellers, buyers):
    """Sellers and buyers, each in (kid, seq) order: the first seller sells to
    the first buyer until one of them is done, then the next takes over. At
    most sellers + buyers - 1 trades, each of at least 1 Wh."""
    sellers = [(*orders[i][:2], fills[i]) for i in sellers if fills[i]]
    buyers = [(*orders[i][:2], fills[i]) for i in buyers if fills[i]]
    trades = []
    new = tuple.__new__  # Trade's own __new__ is Python code, and this makes thousands
    s = b = 0
    left_s = sellers[0][2] if sellers else 0
    left_b = buyers[0][2] if buyers else 0
    while s < len(sellers) and b < len(buyers):
        wh = min(left_s, left_b)
        seller, buyer = sellers[s], buyers[b]
        trades.append(new(Trade, (seller[0], seller[1], buyer[0], buyer[1], wh)))
        left_s -= wh
        left_b -= wh
        if not left_s:
            s += 1
            left_s = sellers[s][2] if s < len(sellers) else 0
        if not left_b:
            b += 1
            left_b = buyers[b][2] if b < len(buyers) else 0
    return trades
