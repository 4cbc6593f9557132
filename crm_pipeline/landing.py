"""The landing contract: what a user drops in, and where.

One place that names every source, its form, its folder and its columns, shared by the
generator (which writes it) and the raw layer (which reads it). See ../shared/DESIGN.md.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

SHOP_DATABASE_FILE = "online_shop.sqlite"
NEED_DIMENSIONS = ("product_quality", "price", "delivery", "customer_service", "ease_of_use")
INQUIRY_TOPICS = ("pre_sales", "complaint", "tech_support", "after_sales", "training", "other")


@dataclass(frozen=True)
class ShopTable:
    """A table of the online order system, read through SQLAlchemy."""

    name: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class FileSource:
    """A file export, one folder per delivery day (or one reference file)."""

    name: str
    folder: str
    pattern: str
    columns: tuple[str, ...]
    daily: bool = True

    def matches(self, path: Path) -> bool:
        """Whether a file's name is of the pattern, in any case (an export's POS_EXPORT.CSV)."""
        return fnmatch.fnmatchcase(path.name.lower(), self.pattern.lower())

    def stray_files(self, root: Path, days: set[str]) -> list[Path]:
        """Files in the source's folder that no load will read: outside a partition day's
        folder, in a folder that is no partition day, or not matching the pattern."""
        base = root / self.folder
        if not self.daily or not base.is_dir():
            return []
        return sorted(
            p
            for p in base.rglob("*")
            if p.is_file()
            and not (p.parent.parent == base and p.parent.name in days and self.matches(p))
        )

    def _named(self, root: Path, day: str | None) -> tuple[list[Path], bool]:
        """What the day's folder (or the reference folder) holds under the pattern's name, and
        whether that folder, or the source's, is a symbolic link."""
        base = root / self.folder
        linked = base.is_symlink()
        if self.daily:
            if not day:
                return [], False
            base = base / day
            linked = linked or base.is_symlink()
        if not base.is_dir():
            return [], False
        return sorted(p for p in base.iterdir() if self.matches(p)), linked

    def files(self, root: Path, day: str | None = None) -> list[Path]:
        """The delivered files, for one day or (reference files) for good: regular files (and
        a folder in a file's place, which fails the load, naming it), never what `refused`
        lists."""
        named, linked = self._named(root, day)
        if linked:
            return []
        return [p for p in named if not p.is_symlink() and (p.is_file() or p.is_dir())]

    def refused(self, root: Path, day: str | None = None) -> list[Path]:
        """What is so named but never read: a symbolic link (it could point at any file the
        pipeline's user may read, the key secret among them), anything in a folder that is one,
        and a special file (a named pipe would hang the load, a device fill memory)."""
        named, linked = self._named(root, day)
        return [p for p in named if linked or p.is_symlink() or not (p.is_file() or p.is_dir())]


ACCOUNTS = ShopTable(
    "accounts",
    (
        "account_id",
        "email",
        "phone",
        "full_name",
        "gender",
        "birth_date",
        "address",
        "city",
        "customer_type",
        "company_name",
        "income",
        "created_at",
    ),
)
ORDERS = ShopTable(
    "orders",
    (
        "order_id",
        "account_id",
        "ordered_at",
        "status",
        "payment_method",
        "currency",
        "total_amount",
    ),
)
ORDER_ITEMS = ShopTable(
    "order_items", ("order_id", "line_no", "sku", "quantity", "unit_price", "discount")
)

STORE_PURCHASES = FileSource(
    "store_purchases",
    "store_purchases",
    "*.csv",
    (
        "receipt_id",
        "store_id",
        "purchased_at",
        "loyalty_card",
        "phone",
        "sku",
        "quantity",
        "unit_price",
        "payment_method",
    ),
)
INQUIRIES = FileSource(
    "inquiries",
    "inquiries",
    "*.jsonl",
    (
        "inquiry_id",
        "channel",
        "opened_at",
        "first_response_at",
        "closed_at",
        "account_id",
        "email",
        "phone",
        "topic",
        "sku",
        "text",
    ),
)
FEEDBACK = FileSource(
    "feedback",
    "feedback",
    "*.csv",
    (
        "response_id",
        "submitted_at",
        "account_id",
        "email",
        "phone",
        "satisfaction_rating",
        "nps",
        *(f"need_{d}_{side}" for d in NEED_DIMENSIONS for side in ("importance", "satisfaction")),
        "comment",
    ),
)
PRODUCTS = FileSource(
    "products",
    "reference",
    "products.csv",
    ("sku", "name", "category", "subcategory", "kind", "unit_price", "unit_cost"),
    daily=False,
)
STORES = FileSource(
    "stores", "reference", "stores.csv", ("store_id", "city", "region"), daily=False
)
LOYALTY_MEMBERS = FileSource(
    "loyalty_members",
    "reference",
    "loyalty_members.csv",
    ("card_no", "full_name", "phone", "email", "birth_date", "address", "income", "joined_at"),
    daily=False,
)

SHOP_TABLES = (ACCOUNTS, ORDERS, ORDER_ITEMS)
DAILY_FILE_SOURCES = (STORE_PURCHASES, INQUIRIES, FEEDBACK)
REFERENCE_FILES = (PRODUCTS, STORES, LOYALTY_MEMBERS)


def shop_url_for(landing_dir: Path | str) -> str:
    """The default SQLAlchemy URL of the online shop: a SQLite file in the landing zone."""
    return f"sqlite:///{Path(landing_dir) / SHOP_DATABASE_FILE}"


def ground_truth_dir_for(landing_dir: Path | str) -> Path:
    """Where the generator's ground-truth manifest lives: beside the landing zone."""
    landing = Path(landing_dir)
    return landing.parent / f"{landing.name}_ground_truth"
