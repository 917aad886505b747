"""Issue 6's market metric: clear one interval of 10,000 random step orders
with host_tools/hub/market.py on CPython.

bench/run.py can call run(); `python bench/market_clear.py` prints it as
JSON. The book is seeded, so every run clears the same orders: 5,000 buys
and 5,000 sells, one per household, 1-8 steps (about 45,000 tranches),
prices in bands around 180,000 µ/kWh that overlap between the sides, in
shuffled order, with connection caps and a feeder limit that bind. Time is
the median of 7 clears after one warm-up. Building the orders (where they
are checked, as the hub does once per ORDER at ingest) is not timed.
"""

import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from host_tools.hub.market import Limits, Order, clear  # noqa: E402


def book(n_orders=10_000, seed=6):
    """n_orders random ORDERs, one per household, shuffled, and Limits that
    bind: a 3 kWh cap on every third household, a feeder limit below the
    volume the book would clear."""
    rng = random.Random(seed)
    orders = []
    for i in range(n_orders):
        side = i % 2
        mid = 170_000 if side else 190_000  # sellers start lower: the sides overlap
        steps = [[rng.randrange(mid - 60_000, mid + 60_000), rng.randrange(1, 2_000)]
                 for _ in range(rng.randint(1, 8))]
        energy = sum(q for _, q in steps)
        limit = max(p for p, _ in steps) if side else min(p for p, _ in steps)
        orders.append(Order.from_fields(i.to_bytes(8, "big"), rng.randrange(2**32), side, energy, limit, steps))
    rng.shuffle(orders)  # the hub gets them in no particular order
    capped = sorted(orders)[::3]
    limits = Limits(feeder_wh=n_orders * 300,
                    import_wh={o.kid: 3_000 for o in capped if o.side == 0},
                    export_wh={o.kid: 3_000 for o in capped if o.side == 1})
    return orders, limits


def run(rounds=7):
    """{"market_clear_10k_orders_ms": median ms of `rounds` clears}."""
    orders, limits = book()
    clear(orders, limits)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        clear(orders, limits)
        times.append((time.perf_counter() - t0) * 1000)
    return {"market_clear_10k_orders_ms": round(statistics.median(times), 1)}


if __name__ == "__main__":
    print(json.dumps(run()))
