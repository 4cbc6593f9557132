"""A day's purchases as the online shop and the store tills record them."""

from __future__ import annotations

import numpy as np

from crm_pipeline.generate.behaviour import Purchases
from crm_pipeline.generate.people import INDIVIDUAL
from crm_pipeline.generate.world import Frame, World, numbered, stamps

ORDER_STATUS = np.array(["completed", "cancelled", "refunded"], dtype=object)
ONLINE_PAY = np.array(
    ["card", "paypal", "apple_pay", "alipay", "wechat_pay", "invoice"], dtype=object
)
STORE_PAY = np.array(["card", "cash", "mobile"], dtype=object)


class Counter:
    """Running ids per kind of record, so ids stay unique across days."""

    def __init__(self) -> None:
        self.next: dict[str, int] = {}

    def take(self, kind: str, n: int) -> np.ndarray:
        first = self.next.get(kind, 1)
        self.next[kind] = first + n
        return np.arange(first, first + n)


def online_orders(
    world: World, rng: np.random.Generator, p: Purchases, ids: Counter
) -> tuple[Frame, Frame, np.ndarray]:
    """Orders and their items; also each order's status code (for complaints and surveys)."""
    pop, n = world.pop, p.count
    account = world.account[p.person]
    later = (
        (world.second_account[p.person] >= 0)
        & (world.second_at[p.person] <= p.at)
        & (rng.random(n) < 0.4)
    )
    account = np.where(later, world.second_account[p.person], account)
    status = rng.choice(3, n, p=[0.92, 0.05, 0.03])
    zh = np.array([loc.startswith("zh") for loc in world.pools.locales])[pop.locale[p.person]]
    pay = np.where(
        zh, rng.choice([0, 3, 4], n, p=[0.25, 0.45, 0.30]), rng.choice(3, n, p=[0.6, 0.3, 0.1])
    )
    pay = np.where((pop.ctype[p.person] != INDIVIDUAL) & (rng.random(n) < 0.7), 5, pay)
    lines = len(p.tx)
    discount = np.where(rng.random(lines) < 0.15, rng.choice([0.05, 0.1, 0.2], lines), 0.0)
    discount = np.round(p.quantity * p.unit_price * discount, 2)
    net = np.bincount(p.tx, weights=p.quantity * p.unit_price - discount, minlength=n)
    order_id = numbered("O", ids.take("order", n), 8)
    counts = np.bincount(p.tx, minlength=n)
    line_no = np.arange(lines) - (np.cumsum(counts) - counts)[p.tx] + 1
    orders = {
        "order_id": order_id,
        "account_id": numbered("A", account, 7),
        "ordered_at": stamps(p.at),
        "status": ORDER_STATUS[status],
        "payment_method": ONLINE_PAY[pay],
        "currency": np.full(n, "USD", dtype=object),
        "total_amount": np.round(net, 2),
    }
    items = {
        "order_id": order_id[p.tx],
        "line_no": line_no.astype(np.int64),
        "sku": world.catalog.skus[p.sku],
        "quantity": p.quantity,
        "unit_price": p.unit_price.astype(float),
        "discount": discount,
    }
    return orders, items, status


def store_receipts(
    world: World, rng: np.random.Generator, p: Purchases, ids: Counter
) -> tuple[Frame, np.ndarray, np.ndarray]:
    """Receipt lines; also the identified receipts (id, person) that carry a card or a phone."""
    pop, n = world.pop, p.count
    card_ok = (world.card[p.person] >= 0) & (
        world.card_day[p.person] <= p.at.astype("datetime64[D]")
    )
    shows_card = card_ok & (rng.random(n) < 0.85)
    gives_phone = np.where(shows_card, rng.random(n) < 0.1, rng.random(n) < 0.3)
    card = np.where(shows_card, numbered("LC", np.maximum(world.card[p.person], 0), 8), None)
    phone = np.where(gives_phone, world.phones(p.person, rng.integers(0, 6, n)), None)
    zh = np.array([loc.startswith("zh") for loc in world.pools.locales])[pop.locale[p.person]]
    pay = np.where(zh, rng.choice(3, n, p=[0.2, 0.1, 0.7]), rng.choice(3, n, p=[0.6, 0.25, 0.15]))
    receipt_id = numbered("R", ids.take("receipt", n), 9)
    frame = {
        "receipt_id": receipt_id[p.tx],
        "store_id": world.catalog.stores["store_id"].to_numpy()[p.store][p.tx],
        "purchased_at": stamps(p.at)[p.tx],
        "loyalty_card": card[p.tx],
        "phone": phone[p.tx],
        "sku": world.catalog.skus[p.sku],
        "quantity": p.quantity,
        "unit_price": p.unit_price.astype(float),
        "payment_method": STORE_PAY[pay][p.tx],
    }
    known = shows_card | gives_phone
    return frame, receipt_id[known], p.person[known]
