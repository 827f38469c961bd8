"""Events: the stored stream, paged, and live over Server-Sent Events."""
