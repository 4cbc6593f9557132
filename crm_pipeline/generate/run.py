"""One generation run: build the world once, then simulate and deliver day by day."""

from __future__ import annotations

import shutil
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from faker.config import AVAILABLE_LOCALES

from crm_pipeline import SettingError, landing
from crm_pipeline.failures import safe_url
from crm_pipeline.generate.behaviour import Shoppers
from crm_pipeline.generate.catalog import build_catalog, product_count
from crm_pipeline.generate.defects import WEIGHTS
from crm_pipeline.generate.deliveries import Deliveries
from crm_pipeline.generate.interactions import Helpdesk
from crm_pipeline.generate.manifest import Manifest
from crm_pipeline.generate.names import build_pools
from crm_pipeline.generate.people import build_population, person_ids
from crm_pipeline.generate.sales import Counter, online_orders, store_receipts
from crm_pipeline.generate.world import World, account_frame, build_world, loyalty_frame
from crm_pipeline.generate.writers import ShopDatabase

DEFAULT_LOCALES = {"en_US": 0.6, "zh_CN": 0.25, "de_DE": 0.15}
ACCOUNT_CHUNK = 100_000
# Written first into a landing zone the generator makes: only such a zone is replaced.
MARKER = ".crm-pipeline-demo"


class NotADemoZone(SettingError):
    """The folder generate was pointed at holds something it did not write."""


def _claim(out: Path, shop_url: str) -> None:
    """Mark `out` as a demo landing zone, refusing a folder with anything the generator did
    not write, and a shop database (other than the zone's own file) that holds shop tables
    for a zone it did not write: generating replaces the deliveries and the shop tables."""
    # Zones generated before the mark have the ground-truth manifest beside them.
    ours = (out / MARKER).exists() or (landing.ground_truth_dir_for(out) / "summary.json").exists()
    if out.exists() and not ours and any(out.iterdir()):
        raise NotADemoZone(
            f"{out} is not empty and was not written by crm-pipeline generate (it has no "
            f"{MARKER}): generating would replace its deliveries and shop tables. Give "
            "another --out, or empty the folder first if it is only demo data."
        )
    if not ours and shop_url != landing.shop_url_for(out):
        names = set(sa.inspect(sa.create_engine(shop_url)).get_table_names())
        taken = sorted(names & {t.name for t in landing.SHOP_TABLES})
        if taken:
            raise NotADemoZone(
                f"The database {safe_url(shop_url)} already holds shop tables {taken}: "
                "generating would replace them. Give another --shop-url, or drop them first "
                "if they are only demo data."
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(
        "Written by crm-pipeline generate: running it again replaces this folder's "
        "deliveries and the online shop tables.\n",
        encoding="utf-8",
    )


def generate(
    out: Path,
    *,
    customers: int = 5000,
    start: date = date(2025, 1, 1),
    days: int = 365,
    seed: int = 42,
    defect_rate: float = 0.02,
    locales: dict[str, float] | None = None,
    shop_url: str | None = None,
    manifest_dir: Path | None = None,
) -> dict:
    """Write a dirty CRM landing zone under `out` and its ground truth; return the summary."""
    began = time.perf_counter()
    locales = dict(locales or DEFAULT_LOCALES)
    if customers < 1 or days < 1:
        raise SettingError(f"--customers ({customers}) and --days ({days}) must be at least 1")
    if not 0 <= defect_rate <= 1:
        raise SettingError(f"--defect-rate must be between 0 and 1, got {defect_rate}")
    if not locales or min(locales.values()) <= 0:
        raise SettingError(
            f"--locales need positive weights, e.g. en_US=0.6,zh_CN=0.4; got {locales}"
        )
    unknown = sorted(set(locales) - set(AVAILABLE_LOCALES))
    if unknown:
        raise SettingError(
            f"--locales: Faker has no locale {', '.join(unknown)}; it has such as "
            "en_US, en_GB, de_DE, fr_FR, zh_CN, ja_JP."
        )
    out = Path(out)
    manifest_dir = Path(manifest_dir) if manifest_dir else landing.ground_truth_dir_for(out)
    shop_url = shop_url or landing.shop_url_for(out)
    _claim(out, shop_url)
    streams = [
        np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(seed).spawn(7)
    ]
    first = np.datetime64(start.isoformat(), "D")

    pools = build_pools(tuple(locales), seed)
    for source in (*landing.DAILY_FILE_SOURCES, landing.PRODUCTS):
        shutil.rmtree(out / source.folder, ignore_errors=True)
    catalog = build_catalog(streams[0], product_count(customers))
    pop = build_population(streams[1], customers, pools, list(locales.values()), first, days)
    world = build_world(streams[2], pools, pop, catalog, first, days)
    shoppers = Shoppers(streams[3], pop, catalog)
    desk = Helpdesk(streams[4], world, shoppers)
    manifest = Manifest(manifest_dir)
    shop = ShopDatabase(shop_url, landing.SHOP_TABLES)
    deliver = Deliveries(out, manifest, shop, seed, defect_rate, days)
    hard = _deliver_once(world, streams[5], deliver, manifest)
    hard.to_csv(manifest_dir / "hard_cases.csv", index=False, lineterminator="\n")

    ids, sales_rng = Counter(), streams[6]
    for d in range(days):
        today = first + np.timedelta64(d, "D")
        day = str(today)
        online, store = shoppers.day(d, today, desk.forced_purchases(d))
        orders, items, status = online_orders(world, sales_rng, online, ids)
        receipts, receipt_ids, receipt_persons = store_receipts(world, sales_rng, store, ids)
        desk.after_purchases(d, online, status, store)
        inquiries, inquiry_ids, inquiry_persons = desk.inquiries(d, today, ids)
        feedback, response_ids, response_persons = desk.feedback(d, today, ids)
        deliver.orders(d, day, orders, items)
        deliver.receipts(d, day, receipts)
        deliver.inquiries(d, day, inquiries)
        deliver.feedback(d, day, feedback)
        manifest.identities("store_purchases", receipt_ids, receipt_persons)
        manifest.identities("inquiries", inquiry_ids, inquiry_persons)
        manifest.identities("feedback", response_ids, response_persons)
    shop.close()
    summary = {
        "parameters": {
            "seed": seed,
            "customers": customers,
            "start": start.isoformat(),
            "days": days,
            "defect_rate": defect_rate,
            "locales": locales,
        },
        "persons": customers,
        "products": len(catalog.price),
        "stores": len(catalog.store_city),
        "defect_rates": {k: round(w * defect_rate, 6) for k, w in WEIGHTS.items()},
        "hard_cases": hard["case"].value_counts().sort_index().to_dict(),
    }
    summary = manifest.close(
        summary | {"generation_seconds": round(time.perf_counter() - began, 3)}
    )
    return summary


def _deliver_once(
    world: World, rng: np.random.Generator, deliver: Deliveries, manifest: Manifest
) -> pd.DataFrame:
    """Reference files and accounts; returns the hard identity cases including second accounts."""
    cat = world.catalog
    deliver.reference(
        {c: cat.products[c].to_numpy() for c in landing.PRODUCTS.columns},
        landing.PRODUCTS.columns,
        "reference/products.csv",
        "products",
    )
    deliver.reference(
        {c: cat.stores[c].to_numpy() for c in landing.STORES.columns},
        landing.STORES.columns,
        "reference/stores.csv",
        "stores",
    )
    members = np.flatnonzero(world.card >= 0)
    members = members[np.argsort(world.card[members])]
    deliver.loyalty(
        loyalty_frame(world, rng, members),
        landing.LOYALTY_MEMBERS.columns,
        "reference/loyalty_members.csv",
    )
    manifest.identities("loyalty_members", [f"LC{k:08d}" for k in world.card[members]], members)
    for second in (False, True):
        number = world.second_account if second else world.account
        holders = np.flatnonzero(number >= 0)
        holders = holders[np.argsort(number[holders])]
        for k in range(0, len(holders), ACCOUNT_CHUNK):
            chunk = holders[k : k + ACCOUNT_CHUNK]
            deliver.accounts(
                account_frame(world, rng, chunk, second),
                k // ACCOUNT_CHUNK + (10_000 if second else 0),
            )
            manifest.identities("online_accounts", [f"A{a:07d}" for a in number[chunk]], chunk)
    twice = np.flatnonzero(world.second_account >= 0)
    second_cases = pd.DataFrame(
        {
            "case": "second_account",
            "person_id": person_ids(twice),
            "other_person_id": person_ids(twice),
        }
    )
    return pd.concat([world.pop.hard_cases, second_cases], ignore_index=True)
