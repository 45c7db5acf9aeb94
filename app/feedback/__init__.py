"""Operators' preference feedback: pairwise comparisons and ratings of reasoning steps, stored in SQLite,
ranked (Bradley-Terry), exported to Parquet for preference training (``python -m app.feedback export``).

Qt-free: the preference panel in ``widgets/`` builds records and calls the store; errors are
``StoreError`` (with a message to show as is) and ``RecordError`` (a ``ValueError``) for a bad record.
"""
from .records import ANSWERS, KINDS, MODES, Candidate, Comparison, Outcome, Rating, RecordError
from .store import (SCHEMA_VERSION, NotAFeedbackStoreError, PreferenceStore, SchemaOutdatedError,
                    SchemaTooNewError, StoreBusyError, StoreCorruptError, StoreError, StoreFullError,
                    StoreNotFoundError, StoreReadOnlyError)

__all__ = ["ANSWERS", "KINDS", "MODES", "SCHEMA_VERSION", "Candidate", "Comparison", "NotAFeedbackStoreError",
           "Outcome", "PreferenceStore", "Rating", "RecordError", "SchemaOutdatedError", "SchemaTooNewError",
           "StoreBusyError", "StoreCorruptError", "StoreError", "StoreFullError", "StoreNotFoundError",
           "StoreReadOnlyError"]
