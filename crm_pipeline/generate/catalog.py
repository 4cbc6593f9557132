"""The product catalogue and the store network the generated customers buy from.

Products sit in categories and subcategories with their own price bands; some anchor products
come with fixed companion SKUs (a laptop with its bag and mouse), so baskets carry association
rules that the mining layer can rediscover.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# (category, subcategory, kind, low price, high price, companion subcategories)
SUBCATEGORIES: tuple[tuple[str, str, str, float, float, tuple[str, ...]], ...] = (
    (
        "Computers",
        "Laptops",
        "physical",
        450.0,
        2400.0,
        ("Laptop Accessories", "Warranty", "Productivity"),
    ),
    ("Computers", "Desktops", "physical", 400.0, 1800.0, ("Monitors", "Installation")),
    ("Computers", "Monitors", "physical", 120.0, 900.0, ()),
    ("Computers", "Laptop Accessories", "physical", 9.0, 120.0, ()),
    ("Phones", "Smartphones", "physical", 150.0, 1300.0, ("Cases", "Chargers", "Warranty")),
    ("Phones", "Cases", "physical", 8.0, 60.0, ()),
    ("Phones", "Chargers", "physical", 10.0, 80.0, ()),
    ("Audio", "Headphones", "physical", 20.0, 450.0, ()),
    ("Audio", "Speakers", "physical", 30.0, 600.0, ()),
    ("Home", "Coffee Machines", "physical", 60.0, 900.0, ("Coffee", "Kitchen Care")),
    ("Home", "Coffee", "physical", 6.0, 35.0, ()),
    ("Home", "Kitchen Care", "physical", 4.0, 25.0, ()),
    ("Office", "Printers", "physical", 80.0, 700.0, ("Ink & Paper", "Installation")),
    ("Office", "Ink & Paper", "physical", 5.0, 90.0, ()),
    ("Office", "Furniture", "physical", 60.0, 1200.0, ()),
    ("Software", "Productivity", "digital", 20.0, 400.0, ()),
    ("Software", "Security", "digital", 15.0, 150.0, ()),
    ("Software", "Games", "digital", 5.0, 70.0, ()),
    ("Services", "Warranty", "service", 30.0, 300.0, ()),
    ("Services", "Installation", "service", 40.0, 250.0, ()),
    ("Services", "Training", "service", 80.0, 1500.0, ()),
)
BRANDS = (
    "Norvik",
    "Altair",
    "Kestrel",
    "Lumen",
    "Orbis",
    "Veldt",
    "Quanta",
    "Sable",
    "Tessel",
    "Hako",
)
MODELS = ("One", "Pro", "Air", "Max", "Lite", "Plus", "S", "X", "Neo", "Go", "Ultra", "Mini")

# (city, region, locale, number of stores, weight of customers living there)
CITIES: tuple[tuple[str, str, str, int], ...] = (
    ("San Francisco", "North America West", "en_US", 2),
    ("Los Angeles", "North America West", "en_US", 3),
    ("Seattle", "North America West", "en_US", 1),
    ("New York", "North America East", "en_US", 3),
    ("Boston", "North America East", "en_US", 1),
    ("Chicago", "North America East", "en_US", 2),
    ("Shanghai", "Greater China", "zh_CN", 2),
    ("Beijing", "Greater China", "zh_CN", 2),
    ("Shenzhen", "Greater China", "zh_CN", 1),
    ("Berlin", "DACH", "de_DE", 1),
    ("Munich", "DACH", "de_DE", 1),
    ("Hamburg", "DACH", "de_DE", 1),
)


@dataclass(frozen=True)
class Catalog:
    """Products and stores as arrays indexed by position (sku index, store index)."""

    products: pd.DataFrame
    stores: pd.DataFrame
    price: np.ndarray
    subcategory: np.ndarray  # subcategory index per product
    category_of_sub: np.ndarray
    popularity_cdf: np.ndarray  # over all products
    by_category_cdf: np.ndarray  # category index + cumulative share within it, products sorted
    companions: np.ndarray  # (products, 3) sku indices, -1 padded
    store_city: np.ndarray  # city index per store
    city_names: tuple[str, ...]
    city_locale: tuple[str, ...]
    categories: tuple[str, ...]
    skus: np.ndarray  # object array of sku codes by index
    names: np.ndarray


def product_count(customers: int) -> int:
    """About 300 products, a few more for a larger customer base."""
    return int(300 + 80 * max(0.0, np.log10(max(customers, 1) / 5000)))


def build_catalog(rng: np.random.Generator, n_products: int) -> Catalog:
    """Draw the catalogue and stores; deterministic for a given generator state."""
    n_sub = len(SUBCATEGORIES)
    categories = tuple(dict.fromkeys(s[0] for s in SUBCATEGORIES))
    category_of_sub = np.array([categories.index(s[0]) for s in SUBCATEGORIES])
    # Every subcategory gets a few products, the rest follow a rough assortment depth.
    sub = np.sort(np.concatenate([np.arange(n_sub), rng.integers(0, n_sub, n_products - n_sub)]))
    # Products are ordered by category so each category is one contiguous block (by_category_cdf).
    sub = sub[np.argsort(category_of_sub[sub], kind="stable")]
    low = np.array([s[3] for s in SUBCATEGORIES])[sub]
    high = np.array([s[4] for s in SUBCATEGORIES])[sub]
    # Log-uniform within the band gives cheap, mid and premium price points.
    price = np.round(np.exp(rng.uniform(np.log(low), np.log(high))), 0) - 0.01
    kinds = np.array([s[2] for s in SUBCATEGORIES])[sub]
    margin = np.where(
        kinds == "physical", rng.uniform(0.15, 0.45, n_products), rng.uniform(0.4, 0.8, n_products)
    )
    cost = np.round(price * (1 - margin), 2)
    names = [
        f"{BRANDS[b]} {SUBCATEGORIES[s][1].rstrip('s')} {MODELS[m]} {n}"
        for b, s, m, n in zip(
            rng.integers(0, len(BRANDS), n_products),
            sub,
            rng.integers(0, len(MODELS), n_products),
            rng.integers(1, 20, n_products),
            strict=True,
        )
    ]
    products = pd.DataFrame(
        {
            "sku": [f"SKU{i + 10001:05d}" for i in range(n_products)],
            "name": names,
            "category": [SUBCATEGORIES[s][0] for s in sub],
            "subcategory": [SUBCATEGORIES[s][1] for s in sub],
            "kind": kinds,
            "unit_price": price,
            "unit_cost": cost,
        }
    )
    # Zipf-like popularity: a few best sellers, a long tail.
    weight = 1.0 / (1.0 + rng.permutation(n_products)) ** 0.8
    popularity_cdf = np.cumsum(weight) / weight.sum()
    cat = category_of_sub[sub]
    by_category = np.empty(n_products)
    for c in range(len(categories)):
        members = cat == c
        by_category[members] = c + np.cumsum(weight[members]) / weight[members].sum()
    companions = np.full((n_products, 3), -1, dtype=np.int64)
    sub_names = [s[1] for s in SUBCATEGORIES]
    for i in range(n_products):
        for k, comp in enumerate(SUBCATEGORIES[sub[i]][5]):
            pool = np.flatnonzero(sub == sub_names.index(comp))
            companions[i, k] = pool[rng.integers(0, len(pool))]
    store_city = np.repeat(np.arange(len(CITIES)), [c[3] for c in CITIES])
    stores = pd.DataFrame(
        {
            "store_id": [f"S{i + 1:03d}" for i in range(len(store_city))],
            "city": [CITIES[c][0] for c in store_city],
            "region": [CITIES[c][1] for c in store_city],
        }
    )
    return Catalog(
        products=products,
        stores=stores,
        price=price,
        subcategory=sub,
        category_of_sub=category_of_sub,
        popularity_cdf=popularity_cdf,
        by_category_cdf=by_category,
        companions=companions,
        store_city=store_city,
        city_names=tuple(c[0] for c in CITIES),
        city_locale=tuple(c[2] for c in CITIES),
        categories=categories,
        skus=products["sku"].to_numpy(dtype=object),
        names=products["name"].to_numpy(dtype=object),
    )


def draw_products(
    catalog: Catalog, rng: np.random.Generator, n: int, category: np.ndarray | None = None
) -> np.ndarray:
    """Sku indices by popularity, overall or (where category >= 0) within a favourite category."""
    u = rng.random(n)
    picks = np.searchsorted(catalog.popularity_cdf, u, side="right")
    if category is not None:
        within = category >= 0
        picks[within] = np.searchsorted(
            catalog.by_category_cdf, category[within] + u[within], side="right"
        )
    return np.minimum(picks, len(catalog.price) - 1)
