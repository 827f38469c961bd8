"""Audit: who did what through the API and the automation."""
