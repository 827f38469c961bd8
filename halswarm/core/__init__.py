"""Pure, stdlib-only logic shared by the daemons (no I/O)."""
