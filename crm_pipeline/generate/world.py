"""The generated world: customers, their accounts and loyalty cards, and how they are written.

Holds what every source needs to turn a true customer into a record as that system would hold
it: account and card numbers, and the spelling of names, emails and phones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crm_pipeline.generate.catalog import Catalog
from crm_pipeline.generate.names import NamePools
from crm_pipeline.generate.people import (
    Population,
    addresses,
    city_names,
    company_names,
    full_names,
)
from crm_pipeline.generate.spelling import (
    COUNTRY_CODES,
    EMAIL_STYLES,
    NAME_STYLES,
    PHONE_STYLES,
    email_text,
    phone_texts,
)

Frame = dict[str, np.ndarray]


def stamps(at: np.ndarray) -> np.ndarray:
    """datetime64 -> 'YYYY-MM-DD HH:MM:SS' strings (NaT -> None)."""
    if len(at) == 0:
        return np.zeros(0, dtype=object)
    text = np.char.replace(
        np.datetime_as_string(at.astype("datetime64[s]"), unit="s"), "T", " "
    ).astype(object)
    text[np.isnat(at)] = None
    return text


def dates(at: np.ndarray) -> np.ndarray:
    text = np.datetime_as_string(at.astype("datetime64[D]"), unit="D").astype(object)
    text[np.isnat(at)] = None
    return text


def numbered(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    return np.array([f"{prefix}{k:0{width}d}" for k in numbers], dtype=object)


@dataclass
class World:
    """Population plus the systems' own identifiers for each person."""

    pools: NamePools
    pop: Population
    catalog: Catalog
    start: np.datetime64  # datetime64[D]
    account: np.ndarray  # account number per person, -1 without an account
    account_at: np.ndarray  # datetime64[s] created_at
    second_account: np.ndarray  # a second registration, -1 mostly
    second_at: np.ndarray
    card: np.ndarray  # loyalty card number, -1 without a card
    card_day: np.ndarray  # datetime64[D] joined_at

    def names(self, who: np.ndarray, styles: np.ndarray) -> np.ndarray:
        return full_names(self.pools, self.pop, who, styles)

    def emails(self, who: np.ndarray, styles: np.ndarray) -> np.ndarray:
        return np.array(
            [email_text(e, s) for e, s in zip(self.pop.email[who], styles, strict=True)],
            dtype=object,
        )

    def phones(self, who: np.ndarray, styles: np.ndarray) -> np.ndarray:
        codes = np.array([COUNTRY_CODES.get(loc, 49) for loc in self.pools.locales])[
            self.pop.locale[who]
        ]
        return phone_texts(codes, self.pop.phone[who], styles)

    def addresses(self, who: np.ndarray) -> np.ndarray:
        return addresses(self.pools, self.pop, who)

    def random_styles(
        self, rng: np.random.Generator, n: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Name, email and phone spelling per record; the plain form is the most common."""
        return (
            np.where(rng.random(n) < 0.6, 0, rng.integers(0, NAME_STYLES, n)),
            np.where(rng.random(n) < 0.6, 0, rng.integers(0, EMAIL_STYLES, n)),
            rng.integers(0, PHONE_STYLES, n),
        )


def build_world(
    rng: np.random.Generator,
    pools: NamePools,
    pop: Population,
    catalog: Catalog,
    start: np.datetime64,
    days: int,
) -> World:
    """Number accounts and cards in the order they were created, as the systems would."""
    n = pop.size
    join = start + pop.join_day.astype("timedelta64[D]")
    created = join.astype("datetime64[s]") + rng.integers(0, 600, n).astype("timedelta64[s]")
    account = _number_in_order(pop.has_account, created)
    second = pop.has_account & (rng.random(n) < 0.01)
    second_at = created + rng.integers(20 * 86400, 200 * 86400, n).astype("timedelta64[s]")
    second &= second_at < start + np.timedelta64(days, "D")
    second_account = np.where(
        second, account.max(initial=-1) + 1 + _number_in_order(second, second_at), -1
    )
    second_at[~second] = np.datetime64("NaT")
    last_day = start + np.timedelta64(days - 1, "D")
    card_day = np.minimum(join + rng.integers(0, 60, n).astype("timedelta64[D]"), last_day)
    card = _number_in_order(pop.has_card, card_day.astype("datetime64[s]"))
    return World(
        pools, pop, catalog, start, account, created, second_account, second_at, card, card_day
    )


def _number_in_order(has: np.ndarray, when: np.ndarray) -> np.ndarray:
    out = np.full(len(has), -1, dtype=np.int64)
    rows = np.flatnonzero(has)
    out[rows[np.argsort(when[rows], kind="stable")]] = np.arange(1, len(rows) + 1)
    return out


def account_frame(world: World, rng: np.random.Generator, who: np.ndarray, second: bool) -> Frame:
    """Account rows for persons `who` (their second registrations when `second`)."""
    pop = world.pop
    name_s, email_s, phone_s = world.random_styles(rng, len(who))
    if second:
        email_s = np.full(len(who), 3)
    birth = pop.birth[who]
    return {
        "account_id": numbered("A", (world.second_account if second else world.account)[who], 7),
        "email": world.emails(who, email_s),
        "phone": np.where(rng.random(len(who)) < 0.85, world.phones(who, phone_s), None),
        "full_name": world.names(who, name_s),
        "gender": np.where(
            rng.random(len(who)) < 0.9, np.where(pop.gender[who] == 0, "F", "M"), None
        ).astype(object),
        "birth_date": np.where(rng.random(len(who)) < 0.8, dates(birth), None),
        "address": world.addresses(who),
        "city": city_names(world.pools, pop, who),
        "customer_type": np.array(["individual", "enterprise", "organization"], dtype=object)[
            pop.ctype[who]
        ],
        "company_name": company_names(world.pools, pop, who),
        "income": np.where(rng.random(len(who)) < 0.7, pop.income[who], np.nan),
        "created_at": stamps((world.second_at if second else world.account_at)[who]),
    }


def loyalty_frame(world: World, rng: np.random.Generator, who: np.ndarray) -> Frame:
    """Loyalty members as the store system registered them (address with the city)."""
    pop = world.pop
    name_s, email_s, phone_s = world.random_styles(rng, len(who))
    cities = city_names(world.pools, pop, who)
    return {
        "card_no": numbered("LC", world.card[who], 8),
        "full_name": world.names(who, name_s),
        "phone": world.phones(who, phone_s),
        "email": np.where(rng.random(len(who)) < 0.7, world.emails(who, email_s), None),
        "birth_date": dates(pop.birth[who]),
        "address": world.addresses(who) + ", " + cities,
        "income": np.where(rng.random(len(who)) < 0.4, pop.income[who], np.nan),
        "joined_at": dates(world.card_day[who]),
    }
