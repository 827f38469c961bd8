"""Project manifest rules (pure): requirements and their validation, templates, risky commands and their
approval tokens. The agent's env package does the I/O (checks, facts, apply) around them."""
