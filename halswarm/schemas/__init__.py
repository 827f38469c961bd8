"""JSON Schemas (draft 2020-12) for HAL-O-SWARM config files, shipped as package data."""
