"""Errors shared by the run and sweep layers (kept free of heavy imports: the sweep CLI
re-launches finished sweeps without loading torch)."""


class ConfigError(ValueError):
    """A run config that cannot run; the message names the key."""
