"""Confirmation of flagged regressions (interleaved re-measurement); being written."""
