"""taskwarden: alerts on failed and stuck catalogue tasks (Digital River, Elastic Path)."""

__version__ = "0.1.0"
