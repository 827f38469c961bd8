"""The supervisor's features: one package each, a service and one APIRouter (see docs/architecture.md)."""
