"""Generator of realistic, dirty CRM source data with a ground-truth manifest.

`generate()` writes the landing zone described in crm_pipeline.landing (online shop database,
store POS CSVs, helpdesk JSONL, survey CSVs, reference files) and, beside it, the truth:
who is who across sources, every injected defect and a summary of what was written.
"""

from __future__ import annotations

from crm_pipeline.generate.cli import add_arguments, run_from_args
from crm_pipeline.generate.run import DEFAULT_LOCALES, generate

__all__ = ["DEFAULT_LOCALES", "add_arguments", "generate", "run_from_args"]
