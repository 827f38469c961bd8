"""Backup and restore-test metrics and events, read from the files the backup timers write."""
