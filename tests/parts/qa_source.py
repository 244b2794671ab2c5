"""A one-file data source, as a contributor writes one (the README's example).

Rows {"question", "good", "bad"} from a local file (data.path) or, without one, from the
hub dataset named here; a row lacking a field is skipped and counted as missing_field.
"""
from __future__ import annotations

from bench.data.registry import register_rows_source


@register_rows_source("qa", hub_id="example/qa-pairs", splits=("train",),
                      reference="none: a test source of question/good/bad rows")
def qa_row(row: dict):
    """(prompt, chosen, rejected, chat messages, note), or the reason the row is skipped."""
    if not all(isinstance(row.get(key), str) for key in ("question", "good", "bad")):
        return "missing_field"
    return f"Q: {row['question']}\nA:", " " + row["good"], " " + row["bad"], None, None
