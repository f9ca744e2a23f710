"""Shared fixtures: composing conf/train.yaml the way scripts/train.py does."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

# One thread per torch process: the suite runs as two xdist workers on two cores, each of whose
# tests starts training processes; two OpenMP threads per process oversubscribed the cores and
# made the subprocess-heavy tests 2-3x slower (tests/test_resume_signal.py: 235 s -> 69 s summed).
# Set before any test module imports torch (nothing above does), and inherited by every process
# a test starts; a value the caller set is kept. Inductor compiles in this process instead of
# first starting a pool of compile workers (each importing torch) for the few kernels a test
# compiles.
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCHINDUCTOR_COMPILE_THREADS"):
    os.environ.setdefault(_name, "1")

ROOT = Path(__file__).resolve().parent.parent
CONF = str(ROOT / "conf")

# A model small enough that a run of a few dozen steps takes about a second on 2 cores.
TINY = [
    "task.model.n_layer=1", "task.model.n_embd=32", "task.model.n_head=2",
    "task.model.block_size=32", "task.batch_size=4", "task.eval_batches=2",
    "task.prepare.max_bytes=200000", "progress=false",
    "metrics.warmup=5",
]


def load_script(name: str):
    """scripts/<name>.py as a module, so that a test calls its main in this process (a fresh
    interpreter costs seconds of imports)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_script",
                                                  ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose_cfg(overrides=(), runs_root=None, data_root=None):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="train", overrides=list(overrides))
    with open_dict(cfg):
        if runs_root is not None:
            cfg.runs_root = str(runs_root)
        if data_root is not None:
            cfg.data_root = str(data_root)
    return cfg


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """One prepared copy of the embedded corpus for the whole session."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def tiny_cfg(tmp_path, data_root):
    def make(*overrides, runs_root=None):
        return compose_cfg([*TINY, *overrides], runs_root=runs_root or tmp_path / "runs",
                           data_root=data_root)
    return make


def _stop_the_session(signum, frame):
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}: the test session stops")


@pytest.fixture(autouse=True, scope="session")
def sigterm_stops_the_session():
    """A SIGTERM (a CI timeout) stops pytest, also while a test trains a run in this process:
    the run's preemption flag checkpoints, then hands the signal on to this handler
    (tasks/train/loop.py PreemptionFlag.forward), which stops the session instead of letting
    the next test begin."""
    previous = signal.signal(signal.SIGTERM, _stop_the_session)
    yield
    signal.signal(signal.SIGTERM, previous)


def pytest_configure(config):
    """Under pytest-xdist (`-n 2`) a SIGTERM reaches the controller, which dies; its workers
    would go on with the test at hand. A worker whose controller is gone signals itself, so the
    handler above stops it too."""
    if hasattr(config, "workerinput"):
        controller = os.getppid()
        threading.Thread(target=_stop_when_orphaned, args=(controller,), daemon=True,
                         name="stop-when-the-controller-is-gone").start()


def _stop_when_orphaned(controller: int) -> None:
    while os.getppid() == controller:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)
