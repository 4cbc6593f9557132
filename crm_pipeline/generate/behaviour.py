"""Buy-till-you-die purchasing: who buys on a given day, where, when and what.

Each customer has a purchase rate lambda ~ Gamma(r, alpha) and, after every purchase, drops out
for good with probability p ~ Beta(a, b) (Pareto/NBD in discrete form). Rates follow a weekly
pattern (stores busier at weekends) and a yearly one (November/December peak).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crm_pipeline.generate.catalog import Catalog, draw_products
from crm_pipeline.generate.people import INDIVIDUAL, OMNI, ONLINE, STORE, Population

# Calibrated so all customers together average about 10 order lines a year.
RATE_SCALE = 0.0142
GAMMA_SHAPE = 0.9
DROPOUT_BETA = (1.0, 9.0)
WEEK_ONLINE = np.array([1.05, 1.0, 1.0, 1.0, 0.95, 0.9, 1.1])
WEEK_STORE = np.array([0.7, 0.75, 0.8, 0.9, 1.1, 1.6, 1.15])
MONTH = np.array([0.85, 0.8, 0.9, 0.95, 0.95, 0.9, 0.9, 0.95, 0.95, 1.0, 1.35, 1.6])
HOURS_ONLINE = np.array(
    [1, 1, 1, 1, 1, 1, 2, 3, 4, 5, 5, 6, 6, 6, 5, 5, 5, 6, 7, 9, 10, 10, 8, 4], float
)
HOURS_STORE = np.array(
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 5, 7, 9, 8, 8, 8, 9, 10, 9, 7, 5, 3, 0, 0], float
)
BASKET_EXTRA = np.array([1.4, 3.2, 2.0])  # mean extra lines by customer type
# Chance a basket starts with a companion of the customer's previous purchase (a case after a
# phone): what a customer bought says something about what they buy next, beyond popularity.
FOLLOW_UP = 0.3


@dataclass
class Purchases:
    """One channel's transactions of a day and their lines (line -> transaction by `tx`)."""

    person: np.ndarray
    at: np.ndarray  # datetime64[s]
    store: np.ndarray  # store index, -1 online
    tx: np.ndarray
    sku: np.ndarray
    quantity: np.ndarray
    unit_price: np.ndarray

    @property
    def count(self) -> int:
        return len(self.person)


class Shoppers:
    """Per-customer purchasing state, advanced one day at a time."""

    def __init__(self, rng: np.random.Generator, pop: Population, catalog: Catalog) -> None:
        n = pop.size
        self.rng, self.pop, self.catalog = rng, pop, catalog
        boost = np.where(pop.ctype == INDIVIDUAL, 1.0, 1.5)
        self.lam = rng.gamma(GAMMA_SHAPE, RATE_SCALE / GAMMA_SHAPE, n) * boost
        self.p = rng.beta(*DROPOUT_BETA, n)
        self.alive = np.ones(n, dtype=bool)
        n_cat = len(catalog.categories)
        self.favourite = np.where(rng.random(n) < 0.6, rng.integers(0, n_cat, n), -1)
        stores_in = [
            np.flatnonzero(catalog.store_city == c) for c in range(len(catalog.city_names))
        ]
        home = rng.integers(0, len(catalog.store_city), n)
        for c, options in enumerate(stores_in):
            rows = np.flatnonzero(pop.city == c)
            home[rows] = options[rng.integers(0, len(options), len(rows))]
        self.home_store = home
        self.last_sku = np.full(n, -1, dtype=np.int64)

    def day(
        self, d: int, date: np.datetime64, forced: tuple[np.ndarray, np.ndarray]
    ) -> tuple[Purchases, Purchases]:
        """The online orders and store receipts of day d; `forced` = (persons, sku) to be bought."""
        rng, pop = self.rng, self.pop
        weekday = int(
            (date.astype("datetime64[D]").astype(np.int64) + 3) % 7
        )  # 1970-01-01 was a Thursday
        month = int(str(date)[5:7]) - 1
        who = np.flatnonzero(self.alive & (pop.join_day <= d))
        ch = pop.channel[who]
        week = np.where(
            ch == ONLINE,
            WEEK_ONLINE[weekday],
            np.where(
                ch == STORE, WEEK_STORE[weekday], (WEEK_ONLINE[weekday] + WEEK_STORE[weekday]) / 2
            ),
        )
        k = rng.poisson(self.lam[who] * week * MONTH[month])
        k[pop.join_day[who] == d] = np.maximum(k[pop.join_day[who] == d], 1)
        buyers = np.repeat(who, k)
        f_person, f_sku = forced
        keep = self.alive[f_person]
        buyers = np.concatenate([buyers, f_person[keep]])
        first = np.concatenate([np.full(len(buyers) - keep.sum(), -1), f_sku[keep]])
        # Dropout after each purchase: surviving k purchases has probability (1 - p)^k.
        once = np.bincount(buyers, minlength=pop.size)
        hit = np.flatnonzero(once)
        self.alive[hit] &= rng.random(len(hit)) < (1 - self.p[hit]) ** once[hit]
        ch = pop.channel[buyers]
        share_online = WEEK_ONLINE[weekday] / (WEEK_ONLINE[weekday] + WEEK_STORE[weekday])
        online = (ch == ONLINE) | ((ch == OMNI) & (rng.random(len(buyers)) < share_online))
        online &= pop.has_account[buyers]
        return (
            self._baskets(buyers[online], first[online], date, HOURS_ONLINE, online=True),
            self._baskets(buyers[~online], first[~online], date, HOURS_STORE, online=False),
        )

    def _baskets(
        self,
        person: np.ndarray,
        first: np.ndarray,
        date: np.datetime64,
        hours: np.ndarray,
        online: bool,
    ) -> Purchases:
        rng, cat = self.rng, self.catalog
        n = len(person)
        hour = rng.choice(24, n, p=hours / hours.sum())
        at = date.astype("datetime64[s]") + (hour * 3600 + rng.integers(0, 3600, n)).astype(
            "timedelta64[s]"
        )
        order = np.argsort(at, kind="stable")
        person, first, at = person[order], first[order], at[order]
        ctype = self.pop.ctype[person]
        n_lines = np.minimum(1 + rng.poisson(BASKET_EXTRA[ctype]), 12)
        tx = np.repeat(np.arange(n), n_lines)
        pos = np.arange(len(tx)) - np.repeat(np.cumsum(n_lines) - n_lines, n_lines)
        fav = self.favourite[person[tx]]
        fav = np.where(rng.random(len(tx)) < 0.5, fav, -1)
        sku = draw_products(cat, rng, len(tx), fav)
        lead = pos == 0
        previous = self.last_sku[person]
        follow_up = cat.companions[np.maximum(previous, 0), rng.integers(0, 3, n)]
        follow_up = np.where((previous >= 0) & (rng.random(n) < FOLLOW_UP), follow_up, -1)
        sku[lead] = np.where(first >= 0, first, np.where(follow_up >= 0, follow_up, sku[lead]))
        anchor = sku[lead][tx]
        companion = cat.companions[anchor, rng.integers(0, 3, len(tx))]
        use = ~lead & (companion >= 0) & (rng.random(len(tx)) < 0.55)
        sku[use] = companion[use]
        # A basket lists a product once (more units are quantity), as tills and shops record it.
        _, first_line = np.unique(tx * len(cat.price) + sku, return_index=True)
        keep = np.zeros(len(tx), dtype=bool)
        keep[first_line] = True
        tx, sku = tx[keep], sku[keep]
        price = cat.price[sku]
        business = ctype[tx] != INDIVIDUAL
        quantity = np.where(
            business & (price < 100),
            1 + rng.poisson(4, len(tx)),
            1
            + (rng.random(len(tx)) < np.where(business, 0.4, 0.12))
            + (rng.random(len(tx)) < 0.03),
        )
        if online:
            store = np.full(n, -1)
        else:
            store = np.where(
                rng.random(n) < 0.85,
                self.home_store[person],
                rng.integers(0, len(cat.store_city), n),
            )
        self.last_sku[person[tx]] = sku
        return Purchases(person, at, store, tx, sku, quantity.astype(np.int64), price)
