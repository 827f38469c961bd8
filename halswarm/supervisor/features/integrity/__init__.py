"""Integrity: `PRAGMA quick_check` of the database in the background, after start-up and on a schedule."""
