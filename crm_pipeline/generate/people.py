"""The true customers: persons, enterprises and organisations, and the hard identity cases.

Everything is an index into the name pools held in numpy arrays, one slot per person, so a
million customers cost tens of megabytes; strings are built only for the records written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from crm_pipeline.generate.catalog import CITIES
from crm_pipeline.generate.names import ORG_KINDS, NamePools, ascii_fold, draw_from
from crm_pipeline.generate.spelling import COUNTRY_CODES

INDIVIDUAL, ENTERPRISE, ORGANIZATION = 0, 1, 2
TYPE_NAMES = np.array(["individual", "enterprise", "organization"], dtype=object)
ONLINE, STORE, OMNI = 0, 1, 2
US_AREA = {
    "San Francisco": 415,
    "Los Angeles": 213,
    "Seattle": 206,
    "New York": 212,
    "Boston": 617,
    "Chicago": 312,
}
DOMAINS = {
    "en_US": ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "hotmail.com"),
    "zh_CN": ("qq.com", "163.com", "126.com", "sina.com", "gmail.com"),
    "de_DE": ("gmx.de", "web.de", "gmail.com", "t-online.de", "outlook.com"),
}


@dataclass
class Population:
    """One slot per true customer (person_id = 'P' + index)."""

    locale: np.ndarray
    ctype: np.ndarray
    gender: np.ndarray
    birth: np.ndarray  # datetime64[D], NaT for companies
    income: np.ndarray  # NaN for companies
    city: np.ndarray  # < len(CITIES): a store city; else pool index + len(CITIES)
    first: np.ndarray
    last: np.ndarray
    middle: np.ndarray
    street: np.ndarray
    house: np.ndarray
    company: np.ndarray  # company pool index, or -1
    phone: np.ndarray  # national digits
    email: np.ndarray  # canonical address
    channel: np.ndarray
    has_account: np.ndarray
    has_card: np.ndarray
    join_day: np.ndarray  # day index of the first purchase; < 0 for customers from before the range
    hard_cases: pd.DataFrame  # case, person_id, other_person_id

    @property
    def size(self) -> int:
        return len(self.locale)


def person_ids(idx: np.ndarray) -> np.ndarray:
    return np.array([f"P{i:07d}" for i in idx], dtype=object)


def _pick(rng: np.random.Generator, probs: list[float], n: int) -> np.ndarray:
    return rng.choice(len(probs), size=n, p=np.asarray(probs) / sum(probs)).astype(np.int8)


def build_population(
    rng: np.random.Generator,
    n: int,
    pools: NamePools,
    weights: list[float],
    start: np.datetime64,
    days: int,
) -> Population:
    """Draw n customers; the hard identity cases are made before any string is built."""
    locales = pools.locales
    locale = _pick(rng, weights, n)
    ctype = _pick(rng, [0.85, 0.10, 0.05], n)
    gender = rng.integers(0, 2, n).astype(np.int8)
    age_days = (rng.normal(42, 14, n).clip(18, 90) * 365.25).astype(np.int64) + rng.integers(
        0, 365, n
    )
    birth = (start - age_days).astype("datetime64[D]")
    birth[ctype != INDIVIDUAL] = np.datetime64("NaT")
    income = np.round(np.exp(rng.normal(np.log(52000), 0.55, n)), -2)
    income[ctype != INDIVIDUAL] = np.nan
    # Most customers live in a city with stores of their own country, the rest elsewhere.
    store_cities = [np.array([i for i, c in enumerate(CITIES) if c[2] == loc]) for loc in locales]
    city = draw_from(pools.city_range, locale, rng) + len(CITIES)
    near = rng.random(n) < 0.85
    for k, options in enumerate(store_cities):
        rows = np.flatnonzero(near & (locale == k))
        if len(options) and len(rows):
            city[rows] = options[rng.integers(0, len(options), len(rows))]
    first = np.where(
        gender == 0,
        draw_from(pools.first_female, locale, rng, 1.6),
        draw_from(pools.first_male, locale, rng, 1.6),
    )
    last = draw_from(pools.last_range, locale, rng, 1.8)
    middle = rng.integers(0, 26, n).astype(np.int8)
    street = draw_from(pools.street_range, locale, rng)
    house = rng.integers(1, 400, n)
    company = np.where(ctype != INDIVIDUAL, draw_from(pools.company_range, locale, rng), -1)
    codes = np.array([COUNTRY_CODES.get(loc, 49) for loc in locales])[locale]
    phone = _phones(rng, codes, city)
    in_store_city = city < len(CITIES)
    channel = np.where(
        ctype == INDIVIDUAL,
        np.where(
            in_store_city, _pick(rng, [0.35, 0.35, 0.30], n), _pick(rng, [0.8, 0.05, 0.15], n)
        ),
        _pick(rng, [0.6, 0.1, 0.3], n),
    ).astype(np.int8)
    has_account = (channel != STORE) | (rng.random(n) < 0.1)
    card_p = np.where(channel == ONLINE, 0.1, 0.6) * np.where(ctype == INDIVIDUAL, 1.0, 0.3)
    has_card = rng.random(n) < card_p
    # Four in ten are customers from before the range; the rest arrive through it, more early on.
    existing = rng.random(n) < 0.4
    join_day = np.where(
        existing, -rng.integers(1, 3 * 365, n), (rng.random(n) ** 1.4 * days).astype(np.int64)
    )
    pop = Population(
        locale=locale,
        ctype=ctype,
        gender=gender,
        birth=birth,
        income=income,
        city=city,
        first=first,
        last=last,
        middle=middle,
        street=street,
        house=house,
        company=company,
        phone=phone,
        email=np.empty(n, dtype=object),
        channel=channel,
        has_account=has_account,
        has_card=has_card,
        join_day=join_day,
        hard_cases=pd.DataFrame(),
    )
    pop.hard_cases = _make_hard_cases(rng, pop, pools)
    pop.email = _emails(rng, pop, pools)
    return pop


def _phones(rng: np.random.Generator, codes: np.ndarray, city: np.ndarray) -> np.ndarray:
    n = len(codes)
    area = np.array([US_AREA.get(c[0], 0) for c in CITIES] + [0])[np.minimum(city, len(CITIES))]
    area = np.where(area == 0, rng.choice([415, 650, 310, 718, 646, 773, 206, 303, 512], n), area)
    us = area * 10_000_000 + rng.integers(200, 1000, n) * 10_000 + rng.integers(0, 10_000, n)
    cn = rng.choice([130, 133, 135, 138, 139, 150, 151, 158, 186, 188], n) * 10**8 + rng.integers(
        0, 10**8, n
    )
    other = rng.choice([151, 152, 157, 160, 170, 171, 176, 178], n) * 10**8 + rng.integers(
        0, 10**8, n
    )
    return np.where(codes == 1, us, np.where(codes == 86, cn, other)).astype(np.int64)


def _make_hard_cases(rng: np.random.Generator, pop: Population, pools: NamePools) -> pd.DataFrame:
    """Family sharing a phone, namesakes, an employee sharing the company's address and phone."""
    individuals = rng.permutation(np.flatnonzero(pop.ctype == INDIVIDUAL))
    k_family, k_same = int(len(individuals) * 0.005), int(len(individuals) * 0.0025)
    enterprises = np.flatnonzero(pop.ctype == ENTERPRISE)
    enterprises = enterprises[rng.random(len(enterprises)) < 0.2]
    rows: list[tuple[str, np.ndarray, np.ndarray]] = []
    a, b = individuals[:k_family], individuals[k_family : 2 * k_family]
    for field in ("locale", "city", "last", "street", "house", "phone"):
        getattr(pop, field)[b] = getattr(pop, field)[a]
    pop.first[b] = np.where(
        pop.gender[b] == 0,
        draw_from(pools.first_female, pop.locale[b], rng),
        draw_from(pools.first_male, pop.locale[b], rng),
    )
    rows.append(("family_shared_phone", a, b))
    a, b = (
        individuals[2 * k_family : 2 * k_family + k_same],
        individuals[2 * k_family + k_same : 2 * (k_family + k_same)],
    )
    for field in ("locale", "gender", "first", "last"):
        getattr(pop, field)[b] = getattr(pop, field)[a]
    rows.append(("same_name", a, b))
    used = 2 * (k_family + k_same)
    b = individuals[used : used + len(enterprises)]
    a = enterprises[: len(b)]
    for field in ("locale", "city", "street", "house", "phone"):
        getattr(pop, field)[b] = getattr(pop, field)[a]
    pop.first[b] = np.where(
        pop.gender[b] == 0,
        draw_from(pools.first_female, pop.locale[b], rng),
        draw_from(pools.first_male, pop.locale[b], rng),
    )
    pop.last[b] = draw_from(pools.last_range, pop.locale[b], rng)
    rows.append(("company_employee", a, b))
    return pd.DataFrame(
        {
            "case": np.concatenate([np.full(len(x), c, dtype=object) for c, x, _ in rows]),
            "person_id": person_ids(np.concatenate([x for _, x, _ in rows])),
            "other_person_id": person_ids(np.concatenate([y for _, _, y in rows])),
        }
    )


def _emails(rng: np.random.Generator, pop: Population, pools: NamePools) -> np.ndarray:
    """Canonical addresses, unique per person (a clash gets the person's number appended)."""
    n = pop.size
    style = rng.integers(0, 5, n)
    dom = rng.integers(0, 5, n)
    numeric = rng.integers(100_000, 3_000_000_000, n)
    out = np.empty(n, dtype=object)
    companies = company_names(pools, pop, np.arange(n))
    for i in range(n):
        loc = pools.locales[pop.locale[i]]
        f, la = pools.first_roman[pop.first[i]].lower(), pools.last_roman[pop.last[i]].lower()
        if pop.ctype[i] != INDIVIDUAL:
            slug = ascii_fold(companies[i])[:18] or f"corp{pop.company[i]}"
            tld = "org" if pop.ctype[i] == ORGANIZATION else ("de" if loc == "de_DE" else "com")
            out[i] = f"{f}.{la}@{slug}.{tld}"
            continue
        domain = DOMAINS.get(loc, DOMAINS["en_US"])[dom[i]]
        if domain in ("qq.com", "163.com") and style[i] < 3:
            out[i] = f"{numeric[i]}@{domain}"
            continue
        local = (
            f"{f}.{la}",
            f"{f}{la}",
            f"{f[:1]}.{la}",
            f"{f}_{la}",
            f"{f}.{la}{numeric[i] % 90 + 10}",
        )[style[i]]
        out[i] = f"{local}@{domain}"
    clash = pd.Series(out).duplicated().to_numpy()
    out[clash] = [
        e.replace("@", f"{i}@", 1) for e, i in zip(out[clash], np.flatnonzero(clash), strict=True)
    ]
    return out


def _zh(pools: NamePools, pop: Population, who: np.ndarray) -> np.ndarray:
    return np.array([loc.startswith("zh") for loc in pools.locales])[pop.locale[who]]


def city_names(pools: NamePools, pop: Population, who: np.ndarray) -> np.ndarray:
    names = np.array([c[0] for c in CITIES] + list(pools.cities), dtype=object)
    return names[pop.city[who]]


def company_names(pools: NamePools, pop: Population, who: np.ndarray) -> np.ndarray:
    """The enterprise's name, a school or charity named after its city, or None."""
    ctype = pop.ctype[who]
    kinds = np.array(ORG_KINDS, dtype=object)[pop.company[who] % len(ORG_KINDS)]
    org = city_names(pools, pop, who) + " " + kinds
    return np.where(
        ctype == ENTERPRISE,
        pools.companies[pop.company[who]],
        np.where(ctype == ORGANIZATION, org, None),
    )


def addresses(pools: NamePools, pop: Population, who: np.ndarray) -> np.ndarray:
    street = pools.streets[pop.street[who]]
    house = pop.house[who].astype(str).astype(object)
    de = np.array([loc.startswith("de") for loc in pools.locales])[pop.locale[who]]
    return np.where(
        _zh(pools, pop, who),
        street + house + "号",
        np.where(de, street + " " + house, house + " " + street),
    )


def full_names(
    pools: NamePools, pop: Population, who: np.ndarray, styles: np.ndarray
) -> np.ndarray:
    """Names in spelling styles 0-4, built array-wise.

    Latin: 'Anna Berg', 'ANNA BERG', 'anna berg', 'Anna K. Berg', 'Berg, Anna'.
    Chinese: '王伟', 'Wang Wei', 'WANG Wei', 'Wei Wang', '王 伟'.
    """
    first, last = pools.first[pop.first[who]], pools.last[pop.last[who]]
    fr, lr = pools.first_roman[pop.first[who]], pools.last_roman[pop.last[who]]
    middle = np.array([chr(65 + k) for k in range(26)], dtype=object)[pop.middle[who]]
    plain = first + " " + last
    upper = np.frompyfunc(str.upper, 1, 1)
    latin = [
        plain,
        upper(plain),
        np.frompyfunc(str.lower, 1, 1)(plain),
        first + " " + middle + ". " + last,
        last + ", " + first,
    ]
    chinese = [last + first, lr + " " + fr, upper(lr) + " " + fr, fr + " " + lr, last + " " + first]
    zh = _zh(pools, pop, who)
    out = np.empty(len(who), dtype=object)
    for k in range(len(latin)):
        rows = styles == k
        out[rows] = np.where(zh[rows], chinese[k][rows], latin[k][rows])
    return out
