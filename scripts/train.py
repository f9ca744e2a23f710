"""Train one run: `python scripts/train.py [group=choice ...] [key=value ...]`.

With no arguments: the embedded default (byte-level GPT on the Python stdlib, AdamW).
Exit codes: 0 completed or diverged (a diverged run is a result), 1 failed, 2 bad config,
3 another process is writing the same run dir (nothing was touched), 128 + signal number when
stopped by SIGTERM/SIGUSR1 after checkpointing (run it again to resume).
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from tasks import run  # noqa: E402
from tasks.train.config import ConfigError  # noqa: E402
from tasks.train.lease import LeaseHeld  # noqa: E402
from tasks.train.loop import Preempted  # noqa: E402


@hydra.main(config_path="../conf", config_name="train", version_base=None)
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except LeaseHeld as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)
    except Preempted as e:
        print(f"[optbench] {e}; run the same command again to resume", file=sys.stderr)
        sys.exit(128 + e.signum)


if __name__ == "__main__":
    main()
