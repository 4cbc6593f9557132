"""Helpdesk inquiries and survey answers, driven by what happened to each customer.

Refunds, cancellations and bad experiences lead to complaints; complaints lower later survey
scores; some pre-sales questions are followed by a purchase of the product asked about.
Follow-ups are queued by day, so memory holds only the next few days of them.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from crm_pipeline.generate.behaviour import Purchases, Shoppers
from crm_pipeline.generate.sales import Counter
from crm_pipeline.generate.world import Frame, World, numbered, stamps
from crm_pipeline.landing import INQUIRY_TOPICS, NEED_DIMENSIONS

PRE_SALES, COMPLAINT, TECH, AFTER_SALES, TRAINING, OTHER = range(6)
BASE_TOPICS = [0.35, 0.08, 0.25, 0.15, 0.07, 0.10]
CHANNELS = np.array(["email", "phone", "chat", "web_form"], dtype=object)
RESPONSE_HOURS = np.array([4.0, 0.03, 0.08, 8.0])  # median first response by channel
TEXTS = {
    PRE_SALES: (
        "Does the {p} work with what I already have? Thinking about buying it.",
        "请问{p}有现货吗？",
    ),
    COMPLAINT: (
        "Very disappointed: the {p} arrived late and damaged, I want my money back.",
        "{p}有质量问题，要求退款。",
    ),
    TECH: ("My {p} stopped working after the last update, please help.", "{p}无法开机，怎么办？"),
    AFTER_SALES: ("How do I claim the warranty for my {p}?", "{p}的保修怎么申请？"),
    TRAINING: ("Can we book a training session for the {p}?", "能否安排{p}的培训？"),
    OTHER: ("Please update my contact details, thanks.", "请更新我的联系方式。"),
}
COMMENTS_GOOD = (
    "Great service, fast delivery.",
    "Love the {p}!",
    'Staff were "super" helpful, thanks',
    "Good value, would buy again",
    "非常满意",
)
COMMENTS_BAD = (
    "Delivery took forever, again.",
    "Support never called back",
    "Price too high, quality meh",
    "The {p} broke after a week, refund took ages",
    "服务太慢了",
)
IMPORTANCE = np.array(
    [[4.3, 4.4, 3.6, 3.4, 3.9], [4.4, 3.3, 4.6, 4.5, 3.6], [3.9, 4.6, 3.5, 4.0, 4.2]]
)
# Delivery and customer service are the systematically underserved needs.
SATISFACTION = np.array([4.1, 3.6, 2.9, 2.7, 3.9])
AFTER_COMPLAINT = np.array([-0.3, 0.0, -0.2, -0.8, 0.0])


class Helpdesk:
    """Per-customer experience (latent satisfaction, complaints) and the queued follow-ups."""

    def __init__(self, rng: np.random.Generator, world: World, shoppers: Shoppers) -> None:
        n = world.pop.size
        self.rng, self.world, self.shoppers = rng, world, shoppers
        self.latent = rng.normal(0, 1, n)
        self.complaints = np.zeros(n, dtype=np.int16)
        self.zh = np.array([loc.startswith("zh") for loc in world.pools.locales])[world.pop.locale]
        self.asks: dict[int, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        self.surveys: dict[int, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        self.buys: dict[int, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)

    def _queue(self, into: dict, d: int, delay: np.ndarray, *cols: np.ndarray) -> None:
        for lag in np.unique(delay):
            sel = delay == lag
            into[d + int(lag)].append(tuple(c[sel] for c in cols))

    def _take(self, into: dict, d: int, width: int) -> tuple[np.ndarray, ...]:
        parts = into.pop(d, [])
        return tuple(
            np.concatenate([p[k] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
            for k in range(width)
        )

    def forced_purchases(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        return self._take(self.buys, d, 2)  # type: ignore[return-value]

    def after_purchases(
        self, d: int, online: Purchases, status: np.ndarray, store: Purchases
    ) -> None:
        """Queue the complaints and survey invitations that today's purchases lead to."""
        rng = self.rng
        person = np.concatenate([online.person, store.person])
        status = np.concatenate([status, np.zeros(store.count, dtype=np.int64)])
        # Refunds often and cancellations sometimes end in a complaint, as does a bad visit.
        bad = (status > 0) | (rng.random(len(person)) < 0.01)
        complain = rng.random(len(person)) < np.where(status == 1, 0.15, np.where(bad, 0.5, 0.0))
        self._queue(
            self.asks,
            d,
            rng.integers(0, 5, complain.sum()),
            person[complain],
            np.full(complain.sum(), COMPLAINT),
        )
        survey = rng.random(len(person)) < 0.06
        self._queue(
            self.surveys,
            d,
            rng.integers(1, 11, survey.sum()),
            person[survey],
            bad[survey].astype(np.int64),
        )

    def inquiries(
        self, d: int, date: np.datetime64, ids: Counter
    ) -> tuple[Frame, np.ndarray, np.ndarray]:
        rng, world, pop = self.rng, self.world, self.world.pop
        n = pop.size
        walk_in = rng.integers(0, n, rng.poisson(n * 0.6 / 365))
        walk_in = walk_in[pop.join_day[walk_in] <= d]
        q_person, q_topic = self._take(self.asks, d, 2)
        person = np.concatenate([walk_in, q_person])
        topic = np.concatenate([rng.choice(6, len(walk_in), p=BASE_TOPICS), q_topic]).astype(
            np.int64
        )
        m = len(person)
        sku = np.where(
            self.shoppers.last_sku[person] >= 0,
            self.shoppers.last_sku[person],
            rng.integers(0, len(world.catalog.price), m),
        )
        ask = topic == PRE_SALES
        sku[ask] = rng.integers(0, len(world.catalog.price), ask.sum())
        follow = ask & (rng.random(m) < 0.35)
        self._queue(self.buys, d, rng.integers(1, 8, follow.sum()), person[follow], sku[follow])
        np.add.at(self.complaints, person[topic == COMPLAINT], 1)
        channel = rng.choice(4, m, p=[0.35, 0.25, 0.2, 0.2])
        opened = date.astype("datetime64[s]") + rng.integers(7 * 3600, 22 * 3600, m).astype(
            "timedelta64[s]"
        )
        slow = np.where(topic == COMPLAINT, 2.5, 1.0)
        respond = RESPONSE_HOURS[channel] * slow * np.exp(rng.normal(0, 0.8, m))
        resolve = np.where(topic == COMPLAINT, 60.0, 12.0) * np.exp(rng.normal(0, 0.9, m))
        first_at = opened + (respond * 3600).astype("timedelta64[s]")
        closed_at = first_at + (resolve * 3600).astype("timedelta64[s]")
        open_still = rng.random(m) < 0.04
        closed_at[open_still] = np.datetime64("NaT")
        first_at[open_still & (rng.random(m) < 0.3)] = np.datetime64("NaT")
        _, email_s, phone_s = world.random_styles(rng, m)
        has_acc = world.account[person] >= 0
        by_account = has_acc & (rng.random(m) < np.array([0.25, 0.1, 0.7, 0.7])[channel])
        by_email = rng.random(m) < np.array([1.0, 0.1, 0.4, 0.9])[channel]
        by_phone = rng.random(m) < np.array([0.15, 0.95, 0.15, 0.3])[channel]
        names = world.catalog.names[sku]
        zh_text = self.zh[person] & (rng.random(m) < 0.6)
        text = [
            TEXTS[t][z].format(p=nm)
            for t, z, nm in zip(topic, zh_text.astype(int), names, strict=True)
        ]
        inquiry_id = numbered("I", ids.take("inquiry", m), 8)
        frame = {
            "inquiry_id": inquiry_id,
            "channel": CHANNELS[channel],
            "opened_at": stamps(opened),
            "first_response_at": stamps(first_at),
            "closed_at": stamps(closed_at),
            "account_id": np.where(
                by_account, numbered("A", np.maximum(world.account[person], 0), 7), None
            ),
            "email": np.where(by_email, world.emails(person, email_s), None),
            "phone": np.where(by_phone, world.phones(person, phone_s), None),
            "topic": np.array(INQUIRY_TOPICS, dtype=object)[topic],
            "sku": np.where(np.isin(topic, [OTHER]), None, world.catalog.skus[sku]),
            "text": np.array(text, dtype=object),
        }
        done = ~open_still & (rng.random(m) < 0.15)
        self._queue(
            self.surveys,
            d,
            rng.integers(1, 6, done.sum()),
            person[done],
            (topic[done] == COMPLAINT).astype(np.int64),
        )
        return frame, inquiry_id, person

    def feedback(
        self, d: int, date: np.datetime64, ids: Counter
    ) -> tuple[Frame, np.ndarray, np.ndarray]:
        rng, world, pop = self.rng, self.world, self.world.pop
        person, bad = self._take(self.surveys, d, 2)
        m = len(person)
        s = (
            0.8 * self.latent[person]
            - 0.9 * np.minimum(self.complaints[person], 3)
            - 1.2 * bad
            + rng.normal(0, 0.6, m)
        )
        complained = (self.complaints[person] > 0)[:, None]
        ctype = pop.ctype[person]
        importance = np.clip(np.round(IMPORTANCE[ctype] + rng.normal(0, 0.6, (m, 5))), 1, 5).astype(
            np.int64
        )
        satisfied = (
            SATISFACTION
            + 0.35 * s[:, None]
            + complained * AFTER_COMPLAINT
            + rng.normal(0, 0.7, (m, 5))
        )
        satisfied = np.clip(np.round(satisfied), 1, 5).astype(np.int64)
        _, email_s, phone_s = world.random_styles(rng, m)
        has_acc = world.account[person] >= 0
        rating = np.clip(np.round(3.9 + 0.9 * s), 1, 5).astype(np.int64)
        names = world.catalog.names[np.maximum(self.shoppers.last_sku[person], 0)]
        pick = rng.integers(0, 5, m)
        comment = [
            (COMMENTS_GOOD if r >= 4 else COMMENTS_BAD)[k].format(p=nm) if c else None
            for r, k, nm, c in zip(rating, pick, names, rng.random(m) < 0.4, strict=True)
        ]
        response_id = numbered("F", ids.take("response", m), 8)
        frame: Frame = {
            "response_id": response_id,
            "submitted_at": stamps(
                date.astype("datetime64[s]") + rng.integers(0, 86400, m).astype("timedelta64[s]")
            ),
            "account_id": np.where(
                has_acc & (rng.random(m) < 0.6),
                numbered("A", np.maximum(world.account[person], 0), 7),
                None,
            ),
            "email": np.where(rng.random(m) < 0.85, world.emails(person, email_s), None),
            "phone": np.where(rng.random(m) < 0.2, world.phones(person, phone_s), None),
            "satisfaction_rating": rating,
            "nps": np.clip(np.round(7.6 + 1.8 * s), 0, 10).astype(np.int64),
        }
        for k, dim in enumerate(NEED_DIMENSIONS):
            frame[f"need_{dim}_importance"] = importance[:, k]
            frame[f"need_{dim}_satisfaction"] = satisfied[:, k]
        frame["comment"] = np.array(comment, dtype=object)
        return frame, response_id, person
