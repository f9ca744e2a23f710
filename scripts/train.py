"""Train one run: `python scripts/train.py [group=choice ...] [key=value ...]`.

With no arguments: the embedded default (byte-level GPT on the Python stdlib, AdamW).
Exit codes: 0 completed or diverged (a diverged run is a result), 1 failed (the cause is in
the run dir's error.txt), 2 bad config, 3 another process is writing the same run dir (nothing
was touched; or this one was paused past the lease's stale time and another took the run over:
it stopped without writing), 128 + signal number when stopped by SIGTERM/SIGUSR1 after
checkpointing (run it again to resume). Training happens here, in this process: to send runs to
SLURM or to local job processes use scripts/sweep.py or scripts/reproduce.py with
launcher=slurm|local.
"""

import os
import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from sweeps.compose import CONF_DIR, check_run_overrides, run_groups  # noqa: E402
from tasks import run  # noqa: E402
from tasks.train import distributed, parallel  # noqa: E402
from tasks.train.config import ConfigError  # noqa: E402
from tasks.train.identity import run_dir  # noqa: E402
from tasks.train.lease import LeaseHeld, LeaseLost  # noqa: E402
from tasks.train.loop import Preempted  # noqa: E402
from tasks.train.runner import failure_cause  # noqa: E402


def check_launcher(cfg: DictConfig) -> None:
    """train.py trains here; a launcher it would not use is an error, not a silent local run.
    The parallel group is the run's own (under torchrun it picks DDP or FSDP2), checked
    against the processes torchrun started."""
    parallel.check(cfg, int(os.environ.get("WORLD_SIZE", "1")), "train.py without torchrun")
    launcher = OmegaConf.to_container(cfg.launcher, resolve=True)
    local = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "launcher" / "local.yaml"))
    if launcher.get("name") == "debug" or launcher == local:
        return
    given = (f"launcher={launcher.get('name')}" if launcher.get("name") != local["name"] else
             ", ".join(f"launcher.{k}={v}" for k, v in launcher.items() if local.get(k) != v))
    raise ConfigError(
        f"train.py trains one run here, in this process, and reads no launcher settings "
        f"(got {given}); to send runs to SLURM or to job processes use "
        f"`python scripts/sweep.py launch NAME [overrides] launcher={launcher.get('name')}` or "
        f"`python scripts/reproduce.py TABLE launcher={launcher.get('name')}`")


# An absolute config path: cli() also runs where this file is imported (tests), not only run.
@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base=None)
def main(cfg: DictConfig) -> None:
    try:
        check_launcher(cfg)
        run(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except (LeaseHeld, LeaseLost) as e:  # the run dir is another process's: nothing written
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)
    except Preempted as e:
        print(f"[optbench] {e}; run the same command again to resume", file=sys.stderr)
        sys.exit(128 + e.signum)
    except Exception as e:  # recorded in the run dir (error.txt, a failed summary) if space allows
        rdir = run_dir(cfg)
        recorded = (rdir / "error.txt").is_file()
        if not recorded:
            traceback.print_exc()
        print(f"error: the run failed: {failure_cause(e, rdir)}"
              + (f" (traceback in {rdir / 'error.txt'})" if recorded else ""), file=sys.stderr)
        sys.exit(1)
    finally:  # a torchrun launch joined a group: leave it before the interpreter exits
        distributed.shutdown()


def usage() -> str:
    """--help: this script's doc, the groups a run composes (not `table`: tables are
    reproduce.py's) and their options."""
    lines = [__doc__.strip(), "", "Groups (group=option):"]
    for group in run_groups():
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        lines.append(f"  {group}: {', '.join(options)}")
    lines += ["", "Keys (key=value) are those of conf/train.yaml and of the chosen options, e.g. "
              "steps=1000 optim.lr=3e-3 seed=1;", "`python scripts/train.py --cfg job` prints a "
              "whole composed config. Paper tables: python scripts/reproduce.py --help"]
    return "\n".join(lines)


def cli() -> None:
    """The command line (sys.argv): --help, then the overrides checked before Hydra sees them
    (it reports a bad group choice or key with exit code 1, ours is 2), then the run."""
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(usage())
        sys.exit(0)
    try:
        check_run_overrides([a for a in sys.argv[1:] if "=" in a and not a.startswith("-")])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
