"""Sessions: list and inspect them; create, prompt, resume, restart, hand over and kill through agents."""
