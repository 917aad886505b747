"""Settlement of one trading interval from the parties' grid-meter READINGs
(docs/hub.md, "Settlement"). Pure: plain values in, plain values out.

- A reading that is implausible for its household (above its fuse or contract
  limit, a negative energy, a register lower than before, energy that differs
  from the register delta) is flagged; the household's trades fail (status 2),
  deliver 0 Wh and move no tokens.
- A household's measured export (as seller) or import (as buyer) is split
  over its trades that did not fail, pro rata to traded Wh, in integers by
  largest remainder (ties: lower trade_id first).
- delivered = min(traded, seller's share, buyer's share).
- Tokens are micro-units of the community's currency. The buyer pays the
  seller delivered x price / 1000, rounded half up. Of the missing Wh, those
  the buyer still imported are paid by the seller at (buyer's retail - price);
  those the seller still exported are paid by the buyer at (price - seller's
  feed-in); each rounded half up, never negative.
- Every token moves as a pair of postings that sum to zero per trade.
- Output order is by trade_id, flags by kid: the input's order never matters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

FULL, PARTIAL, FAILED = 0, 1, 2  # SETTLEMENT status, docs/protocol.md

U32 = 2**32 - 1
U64 = 2**64 - 1
KID_BYTES = 8
MAX_INTERVAL_MIN = 1440
# A fuse carries some overload for minutes and a meter has its class error:
# energy up to 5 % over max W x interval is still believed.
LIMIT_TOLERANCE_PCT = 5

READING_FIELDS = ("interval_min", "ts", "import_wh", "export_wh", "import_register_wh", "export_register_wh")


class SettlementError(ValueError):
    """Input the settlement cannot take; `reason` is a short machine-readable word."""

    def __init__(self, reason, detail=""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class Posting(NamedTuple):
    """One line of the audit trail: `tokens` added to `account`'s balance."""
    account: bytes
    tokens: int
    trade_id: int
    why: str


class Flag(NamedTuple):
    """A household excluded from this interval's settlement, and why."""
    kid: bytes
    reason: str


@dataclass(frozen=True)
class TradeSettlement:
    trade_id: int
    seller: bytes
    buyer: bytes
    energy_wh: int
    price: int
    delivered_wh: int
    amount: int        # what the buyer owes the seller, micro-units, signed
    status: int        # FULL, PARTIAL or FAILED
    seller_share_wh: int
    buyer_share_wh: int
    reason: str | None  # None (full), "seller_short", "buyer_short", or "seller:<flag>"/"buyer:<flag>"

    def settlement_fields(self):
        """The SETTLEMENT message's fields 4..7."""
        return [self.trade_id, self.delivered_wh, self.amount, self.status]


@dataclass(frozen=True)
class IntervalSettlement:
    interval_start: int
    interval_min: int
    trades: tuple       # TradeSettlement, by trade_id
    postings: tuple     # Posting, by trade_id, in the order they were made
    flags: tuple        # Flag, by kid

    def balances(self):
        """kid -> token change over this interval, kids sorted."""
        out = {}
        for p in self.postings:
            out[p.account] = out.get(p.account, 0) + p.tokens
        return dict(sorted(out.items()))


# ---- input checks ----

def _int(value, what, lo=0, hi=U64):
    if type(value) is not int:  # bool is an int subclass, and no floats here
        raise SettlementError("type", f"{what} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise SettlementError("value", f"{what} {value} is outside {lo}..{hi}")
    return value


def _kid(value, what):
    if type(value) is not bytes:
        raise SettlementError("kid", f"{what} must be bytes, not {type(value).__name__}")
    if len(value) != KID_BYTES:
        raise SettlementError("kid", f"{what} must be {KID_BYTES} bytes, not {len(value)}")
    return value


def _field(mapping, name, what):
    if not isinstance(mapping, Mapping):
        raise SettlementError("type", f"{what} must be a mapping, not {type(mapping).__name__}")
    if name not in mapping:
        raise SettlementError("missing", f"{what} has no {name}")
    return mapping[name]


def _reading(reading, what):
    r = {}
    for name in READING_FIELDS:
        v = _field(reading, name, what)
        if name in ("import_wh", "export_wh"):
            # a negative energy is the meter's fault, flagged, not the caller's
            r[name] = _int(v, f"{what} {name}", -U32, U32)
        elif name == "interval_min":
            r[name] = _int(v, f"{what} {name}", 1, MAX_INTERVAL_MIN)
        else:
            r[name] = _int(v, f"{what} {name}")
    return r


def _previous(previous, what):
    if previous is None:
        return None
    p = {name: _int(_field(previous, name, what), f"{what} {name}")
         for name in ("import_register_wh", "export_register_wh")}
    ts = previous.get("ts")
    p["ts"] = None if ts is None else _int(ts, f"{what} ts")
    return p


def _limits(limits, what):
    return {name: _int(_field(limits, name, what), f"{what} {name}", 0, U32)
            for name in ("max_import_w", "max_export_w")}


def _tariff(tariff, what):
    return {name: _int(_field(tariff, name, what), f"{what} {name}", 0, U32)
            for name in ("retail_price", "feed_in_price")}


# ---- plausibility ----

def _check(r, p, lim):
    if r["import_wh"] < 0 or r["export_wh"] < 0:
        return "negative_delta"
    # energy x 60 x 100 > max W x minutes x (100 + tolerance), all integers
    for energy, max_w in ((r["import_wh"], lim["max_import_w"]), (r["export_wh"], lim["max_export_w"])):
        if energy * 6000 > max_w * r["interval_min"] * (100 + LIMIT_TOLERANCE_PCT):
            return "above_limit"
    if p is None:
        return None
    start = r["ts"] - 60 * r["interval_min"]
    if p["ts"] is not None and p["ts"] > start:
        raise SettlementError("previous", f"previous reading at {p['ts']} is not before this one's start {start}")
    adjacent = p["ts"] is None or p["ts"] == start
    for register, energy in (("import_register_wh", r["import_wh"]), ("export_register_wh", r["export_wh"])):
        delta = r[register] - p[register]
        if delta < 0:
            return "register_rollback"
        # the gateway's energies are register deltas exactly (docs/intervals.md);
        # across missing intervals the register grew by at least this one's energy
        if (delta != energy) if adjacent else (delta < energy):
            return "register_mismatch"
    return None


def check_reading(reading, previous, limits):
    """-> None if the reading is plausible, else the reason: `negative_delta`,
    `above_limit`, `register_rollback` or `register_mismatch`.

    reading: a mapping with READING_FIELDS (others ignored); previous: the
    previous accepted reading's import_register_wh, export_register_wh and
    optionally ts (None: adjacent), or None for a first reading; limits:
    max_import_w, max_export_w. Malformed input raises SettlementError."""
    return _check(_reading(reading, "reading"), _previous(previous, "previous"), _limits(limits, "limits"))


# ---- arithmetic ----

def _half_up(numerator, denominator):
    """numerator / denominator to the nearest integer, halves up (both >= 0)."""
    return (2 * numerator + denominator) // (2 * denominator)


def _pro_rata(total, weights):
    """Split `total` over (key, weight) pairs in proportion to weight; integer
    shares by largest remainder, ties to the lower key. -> {key: share}."""
    whole = sum(w for _, w in weights)
    shares, remainders = {}, []
    for key, w in weights:
        q, rem = divmod(total * w, whole)
        shares[key] = q
        remainders.append((-rem, key))
    remainders.sort()
    for _, key in remainders[:total - sum(shares.values())]:
        shares[key] += 1
    return shares


# ---- settlement ----

def _trades(trades):
    if isinstance(trades, (str, bytes, Mapping)):
        raise SettlementError("type", "trades must be a sequence of tuples")
    out, seen = [], set()
    for t in trades:
        if not isinstance(t, (tuple, list)) or len(t) != 5:
            raise SettlementError("type", "a trade is (trade_id, seller, buyer, energy_wh, price)")
        trade_id = _int(t[0], "trade_id")
        if trade_id in seen:
            raise SettlementError("duplicate_trade", f"trade {trade_id} twice")
        seen.add(trade_id)
        seller, buyer = _kid(t[1], f"trade {trade_id} seller"), _kid(t[2], f"trade {trade_id} buyer")
        if seller == buyer:
            raise SettlementError("self_trade", f"trade {trade_id}: {seller.hex()} on both sides")
        out.append((trade_id, seller, buyer, _int(t[3], f"trade {trade_id} energy_wh", 1, U32),
                    _int(t[4], f"trade {trade_id} price", 0, U32)))
    out.sort()
    return out


def _households(table, what, check):
    if not isinstance(table, Mapping):
        raise SettlementError("type", f"{what} must be a mapping kid -> values")
    return {_kid(kid, f"{what} key"): check(v, f"{what} of {kid.hex()}") for kid, v in table.items()}


def settle(interval_start, trades, readings, previous, limits, tariffs, *, interval_min):
    """Settle one interval [interval_start, interval_start + 60 x interval_min).

    trades: (trade_id, seller kid, buyer kid, energy_wh, price µ/kWh) tuples;
    readings: kid -> the household grid meter's reading of this interval;
    previous: kid -> the previous accepted reading's registers (or None);
    limits: kid -> {max_import_w, max_export_w};
    tariffs: kid -> {retail_price, feed_in_price} (µ/kWh).
    Every trade party needs limits and a tariff, every reading limits.
    -> IntervalSettlement. Malformed input raises SettlementError."""
    interval_start = _int(interval_start, "interval_start")
    interval_min = _int(interval_min, "interval_min", 1, MAX_INTERVAL_MIN)
    trades = _trades(trades)
    readings = _households(readings, "reading", _reading)
    if previous is None:
        previous = {}
    previous = _households(previous, "previous", _previous)
    limits = _households(limits, "limits", _limits)
    tariffs = _households(tariffs, "tariff", _tariff)

    for kid in sorted(readings):
        if kid not in limits:
            raise SettlementError("unknown_household", f"reading from {kid.hex()}, which has no limits")
    for trade_id, seller, buyer, _, _ in trades:
        for kid in (seller, buyer):
            if kid not in limits or kid not in tariffs:
                raise SettlementError("unknown_household", f"trade {trade_id}: {kid.hex()} has no limits or tariff")

    flags = {}
    for kid in sorted(readings):
        r = readings[kid]
        if r["interval_min"] != interval_min or r["ts"] != interval_start + 60 * interval_min:
            flags[kid] = "wrong_interval"
        else:
            reason = _check(r, previous.get(kid), limits[kid])
            if reason is not None:
                flags[kid] = reason
    for _, seller, buyer, _, _ in trades:
        for kid in (seller, buyer):
            if kid not in readings:
                flags[kid] = "missing_reading"

    sells, buys = {}, {}
    for trade_id, seller, buyer, energy_wh, _ in trades:
        if seller not in flags and buyer not in flags:
            sells.setdefault(seller, []).append((trade_id, energy_wh))
            buys.setdefault(buyer, []).append((trade_id, energy_wh))
    seller_share, buyer_share = {}, {}
    for kid in sorted(sells):
        seller_share.update(_pro_rata(readings[kid]["export_wh"], sells[kid]))
    for kid in sorted(buys):
        buyer_share.update(_pro_rata(readings[kid]["import_wh"], buys[kid]))

    results, postings = [], []
    for trade_id, seller, buyer, energy_wh, price in trades:
        if trade_id not in seller_share:
            side, kid = ("seller", seller) if seller in flags else ("buyer", buyer)
            reason = f"{side}:{flags[kid]}"
            postings += [Posting(buyer, 0, trade_id, "failed:" + reason),
                         Posting(seller, 0, trade_id, "failed:" + reason)]
            results.append(TradeSettlement(trade_id, seller, buyer, energy_wh, price, 0, 0, FAILED, 0, 0, reason))
            continue
        s_share, b_share = seller_share[trade_id], buyer_share[trade_id]
        delivered = min(energy_wh, s_share, b_share)
        payment = _half_up(delivered * price, 1000)
        postings += [Posting(buyer, -payment, trade_id, "energy"), Posting(seller, payment, trade_id, "energy")]
        # at most one of these is > 0: the missing Wh the other side did meter
        buyer_took_from_grid = min(energy_wh, b_share) - delivered
        seller_gave_to_grid = min(energy_wh, s_share) - delivered
        amount, reason, status = payment, None, FULL if delivered == energy_wh else PARTIAL
        if buyer_took_from_grid:
            comp = _half_up(buyer_took_from_grid * max(0, tariffs[buyer]["retail_price"] - price), 1000)
            postings += [Posting(seller, -comp, trade_id, "seller_shortfall"),
                         Posting(buyer, comp, trade_id, "seller_shortfall")]
            amount, reason = payment - comp, "seller_short"
        elif seller_gave_to_grid:
            comp = _half_up(seller_gave_to_grid * max(0, price - tariffs[seller]["feed_in_price"]), 1000)
            postings += [Posting(buyer, -comp, trade_id, "buyer_shortfall"),
                         Posting(seller, comp, trade_id, "buyer_shortfall")]
            amount, reason = payment + comp, "buyer_short"
        elif status == PARTIAL:
            reason = "both_short"  # neither side metered the missing Wh: nothing to make good
        results.append(TradeSettlement(trade_id, seller, buyer, energy_wh, price, delivered, amount, status,
                                       s_share, b_share, reason))

    return IntervalSettlement(interval_start, interval_min, tuple(results), tuple(postings),
                              tuple(Flag(kid, flags[kid]) for kid in sorted(flags)))


# ---- balances ----

class Ledger:
    """Token balances, kid -> int, moved only by balanced postings: the sum of
    all balances is always 0. A trade's postings are taken once."""

    def __init__(self):
        self._balances = {}
        self._settled = set()

    def apply(self, postings):
        """Apply an IntervalSettlement's postings (or a list of Posting); all
        or nothing. SettlementError `unbalanced`, `already_applied`, `type`."""
        if isinstance(postings, IntervalSettlement):
            postings = postings.postings
        per_trade = {}
        for p in postings:
            if not isinstance(p, tuple) or len(p) != 4:
                raise SettlementError("type", "a posting is (account, tokens, trade_id, why)")
            _kid(p[0], "account")
            _int(p[1], "tokens", -2**63, 2**63)
            _int(p[2], "trade_id")
            per_trade[p[2]] = per_trade.get(p[2], 0) + p[1]
        for trade_id in sorted(per_trade):
            if per_trade[trade_id]:
                raise SettlementError("unbalanced", f"trade {trade_id}'s postings sum to {per_trade[trade_id]}")
            if trade_id in self._settled:
                raise SettlementError("already_applied", f"trade {trade_id} was settled before")
        for account, tokens, _, _ in postings:
            self._balances[account] = self._balances.get(account, 0) + tokens
        self._settled.update(per_trade)

    def balance(self, kid):
        return self._balances.get(kid, 0)

    @property
    def balances(self):
        """A copy, kids sorted."""
        return dict(sorted(self._balances.items()))

    def total(self):
        return sum(self._balances.values())
