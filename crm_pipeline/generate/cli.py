"""The `generate` command: flags for every parameter of `generate()`."""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

from crm_pipeline.landing import ground_truth_dir_for


def parse_locales(text: str) -> dict[str, float]:
    """'en_US=0.6,zh_CN=0.25' -> {'en_US': 0.6, 'zh_CN': 0.25}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, weight = part.partition("=")
        try:
            out[name.strip()] = float(weight) if sep else 1.0
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--locales: '{part}' is not LOCALE=WEIGHT, e.g. en_US=0.6"
            ) from None
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=Path("data/landing"), help="landing zone folder"
    )
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument(
        "--start", type=date.fromisoformat, default=date(2025, 1, 1), help="YYYY-MM-DD"
    )
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--defect-rate", type=float, default=0.02, help="0 for clean data")
    parser.add_argument(
        "--locales",
        type=parse_locales,
        default=None,
        help="Faker locales and weights, e.g. en_US=0.6,zh_CN=0.25,de_DE=0.15",
    )
    parser.add_argument(
        "--shop-url", default=None, help="SQLAlchemy URL (default: SQLite file in --out)"
    )
    parser.add_argument(
        "--manifest-dir",
        type=Path,
        default=None,
        help="ground-truth folder (default: <out>_ground_truth beside --out)",
    )


def run_from_args(args: argparse.Namespace) -> dict:
    from crm_pipeline.generate.run import generate

    summary = generate(
        args.out,
        customers=args.customers,
        start=args.start,
        days=args.days,
        seed=args.seed,
        defect_rate=args.defect_rate,
        locales=args.locales,
        shop_url=args.shop_url,
        manifest_dir=args.manifest_dir,
    )
    brief = {k: summary[k] for k in ("rows", "defects", "generation_seconds")}
    truth = args.manifest_dir or ground_truth_dir_for(args.out)
    print(f"Generated a landing zone in {args.out} (ground truth in {truth}):")
    print(json.dumps(brief, indent=1))
    return summary
