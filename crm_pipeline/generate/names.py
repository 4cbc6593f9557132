"""Pools of names, streets, cities and companies per locale, drawn once from Faker.

Faker is slow per call, so the generator draws a few thousand values per locale up front and
builds every person from indices into these pools. Chinese names come from a small paired table
so each name has a known pinyin spelling (the transliteration variants need it).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np
from faker import Faker

ZH_SURNAMES = (
    ("王", "Wang"),
    ("李", "Li"),
    ("张", "Zhang"),
    ("刘", "Liu"),
    ("陈", "Chen"),
    ("杨", "Yang"),
    ("黄", "Huang"),
    ("赵", "Zhao"),
    ("吴", "Wu"),
    ("周", "Zhou"),
    ("徐", "Xu"),
    ("孙", "Sun"),
    ("马", "Ma"),
    ("朱", "Zhu"),
    ("胡", "Hu"),
    ("郭", "Guo"),
    ("何", "He"),
    ("林", "Lin"),
    ("罗", "Luo"),
    ("高", "Gao"),
    ("郑", "Zheng"),
    ("梁", "Liang"),
    ("谢", "Xie"),
    ("宋", "Song"),
    ("唐", "Tang"),
    ("许", "Xu"),
    ("韩", "Han"),
    ("冯", "Feng"),
    ("邓", "Deng"),
    ("曹", "Cao"),
)
ZH_GIVEN_FEMALE = (
    ("芳", "Fang"),
    ("娜", "Na"),
    ("敏", "Min"),
    ("静", "Jing"),
    ("丽", "Li"),
    ("艳", "Yan"),
    ("娟", "Juan"),
    ("霞", "Xia"),
    ("秀英", "Xiuying"),
    ("桂英", "Guiying"),
    ("婷", "Ting"),
    ("雪", "Xue"),
    ("慧", "Hui"),
    ("玉兰", "Yulan"),
    ("晓燕", "Xiaoyan"),
    ("丹", "Dan"),
    ("欣怡", "Xinyi"),
    ("梓涵", "Zihan"),
    ("雨婷", "Yuting"),
    ("佳琪", "Jiaqi"),
    ("美玲", "Meiling"),
)
ZH_GIVEN_MALE = (
    ("伟", "Wei"),
    ("强", "Qiang"),
    ("磊", "Lei"),
    ("军", "Jun"),
    ("洋", "Yang"),
    ("勇", "Yong"),
    ("杰", "Jie"),
    ("涛", "Tao"),
    ("明", "Ming"),
    ("超", "Chao"),
    ("平", "Ping"),
    ("刚", "Gang"),
    ("建华", "Jianhua"),
    ("志强", "Zhiqiang"),
    ("浩然", "Haoran"),
    ("子轩", "Zixuan"),
    ("俊杰", "Junjie"),
    ("宇航", "Yuhang"),
    ("国庆", "Guoqing"),
    ("海波", "Haibo"),
    ("文博", "Wenbo"),
)
ORG_KINDS = (
    "Public School",
    "Community College",
    "Foundation",
    "Food Bank",
    "Library",
    "Youth Club",
)
POOL_SIZE = 500


@dataclass(frozen=True)
class NamePools:
    """Flat pools; per locale the slice [start, start + size) of each pool belongs to it."""

    locales: tuple[str, ...]
    first: np.ndarray  # display spelling
    first_roman: np.ndarray  # ascii spelling, for emails and transliterations
    first_female: np.ndarray  # (locales, 2) start and size of the female first names
    first_male: np.ndarray
    last: np.ndarray
    last_roman: np.ndarray
    last_range: np.ndarray
    streets: np.ndarray
    street_range: np.ndarray
    cities: np.ndarray
    city_range: np.ndarray
    companies: np.ndarray
    company_range: np.ndarray


def ascii_fold(text: str) -> str:
    """'Müller-Lüdenscheidt' -> 'muellerluedenscheidt': a plausible email spelling."""
    text = text.replace("ä", "ae").replace("ö", "oe").replace("ü", "ue").replace("ß", "ss")
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _unique(values: list[str], limit: int) -> list[str]:
    return list(dict.fromkeys(values))[:limit]


def build_pools(locales: tuple[str, ...], seed: int) -> NamePools:
    """Draw the pools for the given locales; the same seed gives the same pools."""
    cols: dict[str, list[str]] = {
        k: []
        for k in ("first", "first_roman", "last", "last_roman", "streets", "cities", "companies")
    }
    ranges: dict[str, list[tuple[int, int]]] = {
        k: [] for k in ("first_female", "first_male", "last", "streets", "cities", "companies")
    }

    def add(kind: str, pool: str, values: list[str], roman: list[str] | None = None) -> None:
        ranges[kind].append((len(cols[pool]), len(values)))
        cols[pool].extend(values)
        if roman is not None:
            cols[pool + "_roman"].extend(roman)

    for k, locale in enumerate(locales):
        fake = Faker(locale)
        fake.seed_instance(seed * 100 + k)
        if locale.startswith("zh"):
            add(
                "first_female",
                "first",
                [c for c, _ in ZH_GIVEN_FEMALE],
                [p for _, p in ZH_GIVEN_FEMALE],
            )
            add("first_male", "first", [c for c, _ in ZH_GIVEN_MALE], [p for _, p in ZH_GIVEN_MALE])
            add("last", "last", [c for c, _ in ZH_SURNAMES], [p for _, p in ZH_SURNAMES])
        else:
            for kind, draw in (
                ("first_female", fake.first_name_female),
                ("first_male", fake.first_name_male),
            ):
                names = _unique([draw() for _ in range(POOL_SIZE)], POOL_SIZE)
                add(kind, "first", names, [ascii_fold(n) for n in names])
            names = _unique([fake.last_name() for _ in range(POOL_SIZE)], POOL_SIZE)
            add("last", "last", names, [ascii_fold(n) for n in names])
        add(
            "streets", "streets", _unique([fake.street_name() for _ in range(POOL_SIZE)], POOL_SIZE)
        )
        add("cities", "cities", _unique([fake.city() for _ in range(200)], 60))
        add(
            "companies",
            "companies",
            _unique([fake.company() for _ in range(POOL_SIZE // 2)], POOL_SIZE),
        )

    arr = {k: np.array(v, dtype=object) for k, v in cols.items()}
    rng_arr = {k: np.array(v, dtype=np.int64) for k, v in ranges.items()}
    return NamePools(
        locales=locales,
        first=arr["first"],
        first_roman=arr["first_roman"],
        first_female=rng_arr["first_female"],
        first_male=rng_arr["first_male"],
        last=arr["last"],
        last_roman=arr["last_roman"],
        last_range=rng_arr["last"],
        streets=arr["streets"],
        street_range=rng_arr["streets"],
        cities=arr["cities"],
        city_range=rng_arr["cities"],
        companies=arr["companies"],
        company_range=rng_arr["companies"],
    )


def draw_from(
    ranges: np.ndarray, locale: np.ndarray, rng: np.random.Generator, skew: float = 1.0
) -> np.ndarray:
    """Pool indices within each row's locale slice; skew > 1 makes the first entries common."""
    start, size = ranges[locale, 0], ranges[locale, 1]
    return start + np.minimum((rng.random(len(locale)) ** skew * size).astype(np.int64), size - 1)
