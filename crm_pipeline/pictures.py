"""Charts of the marts, as PNG bytes: for the Dagster UI (Markdown metadata with the image
inline) and for the static HTML report. Pure functions of small frames; no Dagster here."""

from __future__ import annotations

import base64
import io

import pandas as pd

QUADRANT_COLOURS = {
    "Concentrate here": "#d62728",
    "Keep up the good work": "#2ca02c",
    "Low priority": "#7f7f7f",
    "Possible overkill": "#ff7f0e",
}


def _figure(width: float, height: float, columns: int = 1):
    """A figure and its axes (matplotlib is imported here: it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, columns, figsize=(width, height), dpi=100, sharey=columns > 1)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def no_data(title: str) -> bytes:
    """A placeholder for a chart whose table has no rows yet."""
    fig, ax = _figure(6, 1.5)
    ax.text(0.5, 0.5, f"{title}: no data yet", ha="center", va="center")
    ax.set_axis_off()
    return _png(fig)


def markdown_image(png: bytes, title: str) -> str:
    """Markdown that shows the PNG inline (the Dagster UI renders data URLs)."""
    return f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"


def ipa_chart(overall: pd.DataFrame) -> bytes:
    """Importance (y) against satisfaction (x) per need dimension, crosshairs at the means,
    colour by quadrant. overall: dimension, importance, satisfaction, quadrant."""
    fig, ax = _figure(6, 4.5)
    for quadrant, group in overall.groupby("quadrant"):
        ax.scatter(
            group["satisfaction"],
            group["importance"],
            s=80,
            color=QUADRANT_COLOURS.get(quadrant, "#1f77b4"),
            label=quadrant,
        )
    for row in overall.itertuples():
        ax.annotate(
            row.dimension,
            (row.satisfaction, row.importance),
            xytext=(5, 4),
            textcoords="offset points",
            fontsize=8,
        )
    ax.axhline(overall["importance"].mean(), color="#999", lw=0.8, ls="--")
    ax.axvline(overall["satisfaction"].mean(), color="#999", lw=0.8, ls="--")
    ax.set_xlabel("mean satisfaction (1-5)")
    ax.set_ylabel("mean importance (1-5)")
    ax.set_title("Needs: importance against performance")
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


def segment_chart(segments: pd.DataFrame) -> bytes:
    """Customers and 12-month CLV per RFM segment. segments: rfm_segment, customers, clv."""
    fig, (left, right) = _figure(9, 4, columns=2)
    ordered = segments.sort_values("customers")
    left.barh(ordered["rfm_segment"], ordered["customers"], color="#1f77b4")
    left.set_xlabel("customers")
    right.barh(ordered["rfm_segment"], ordered["clv"].fillna(0), color="#2ca02c")
    right.set_xlabel("expected value, next 12 months")
    fig.suptitle("RFM segments: size and value")
    return _png(fig)


def cohort_heatmap(retention: pd.DataFrame) -> bytes:
    """Retention % by cohort month (rows) and months since (columns)."""
    table = retention.pivot(index="cohort_month", columns="months_since", values="retention")
    fig, ax = _figure(8, max(3, 0.35 * len(table) + 1.5))
    image = ax.imshow(table.to_numpy(dtype=float), cmap="Blues", aspect="auto", vmin=0, vmax=100)
    ax.set_yticks(range(len(table)), table.index)
    ax.set_xticks(range(len(table.columns)), table.columns)
    ax.set_xlabel("months since the first purchase")
    ax.set_ylabel("cohort (first purchase month)")
    ax.set_title("Cohort retention, % of the cohort buying")
    fig.colorbar(image, ax=ax, label="%")
    return _png(fig)


def opportunities_chart(top: pd.DataFrame) -> bytes:
    """The largest opportunities by estimated yearly value. top: label, type, estimated_value."""
    fig, ax = _figure(9, max(3, 0.4 * len(top) + 1))
    ordered = top.sort_values("estimated_value")
    colours = {kind: f"C{i}" for i, kind in enumerate(sorted(top["type"].unique()))}
    ax.barh(
        ordered["label"], ordered["estimated_value"], color=[colours[t] for t in ordered["type"]]
    )
    for kind, colour in colours.items():
        ax.bar(0, 0, color=colour, label=kind)
    ax.set_xlabel("estimated value per year")
    ax.set_title("Top opportunities")
    ax.legend(fontsize=7, loc="lower right")
    ax.tick_params(axis="y", labelsize=7)
    return _png(fig)
