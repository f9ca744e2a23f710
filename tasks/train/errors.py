"""Errors shared by the run and sweep layers (kept free of heavy imports: the sweep CLI
re-launches finished sweeps without loading torch)."""


class ConfigError(ValueError):
    """A run config that cannot run; the message names the key."""


class Preempted(Exception):
    """Raised after a checkpoint was written in answer to a stop signal (SIGTERM, SIGUSR1/2,
    Ctrl-C): the run is resumable by the same command."""

    def __init__(self, signum: int):
        import signal

        super().__init__(f"stopped by signal {signal.Signals(signum).name} after checkpointing")
        self.signum = signum
