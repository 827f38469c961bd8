"""halctl, the operator CLI (one module per command group)."""
