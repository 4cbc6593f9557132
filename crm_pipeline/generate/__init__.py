"""Generator of realistic, dirty CRM source data with a ground-truth manifest.

`generate()` writes the landing zone described in crm_pipeline.landing (online shop database,
store POS CSVs, helpdesk JSONL, survey CSVs, reference files) and, beside it, the truth:
who is who across sources, every injected defect and a summary of what was written.

The generator (Faker and friends) is imported on first use, so that every other command of
the crm-pipeline CLI, which only needs the `generate` flags, starts a second sooner.
"""

from __future__ import annotations

from crm_pipeline.generate.cli import add_arguments, run_from_args

__all__ = ["DEFAULT_LOCALES", "add_arguments", "generate", "run_from_args"]


def __getattr__(name: str):
    if name in ("DEFAULT_LOCALES", "generate"):
        from crm_pipeline.generate import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
