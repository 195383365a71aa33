"""Questions and where they come from. Importing this package pulls neither Ray nor pyarrow (parquet is
imported when a parquet file is read) nor `datasets` (imported for hf: sources only)."""

from zppo_ray.data.loaders import (
    PRESETS,
    TRANSFORMS,
    ColumnMap,
    load_hf,
    load_questions,
    load_questions_report,
    resolve_column_map,
)
from zppo_ray.data.schema import KINDS, Question
from zppo_ray.data.validate import REASONS, DataError, LoadReport, ensure_unique_ids, render_choices

__all__ = [
    "KINDS", "PRESETS", "REASONS", "TRANSFORMS", "ColumnMap", "DataError", "LoadReport", "Question",
    "ensure_unique_ids", "load_hf", "load_questions", "load_questions_report", "render_choices",
    "resolve_column_map",
]
