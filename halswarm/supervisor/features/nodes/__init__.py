"""Nodes: the fleet as the hub knows it, and each node's tool auth state."""
