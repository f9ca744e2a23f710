"""What made a run: the commit and the software and hardware it ran on (the version of the
code it executes is its own, tasks/train/identity.py).

`git_commit()` is the one provenance function of the project (runs, tables and benchmarks all
call it). `environment()` is what each run writes to `env.json` and copies into its summary, so
that every number can be traced to the commit and library versions that produced it.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Distributions whose versions can change a run's numbers or its data handling.
LIBRARIES = ("hydra-core", "omegaconf", "submitit", "wandb", "transformers", "peft", "datasets",
             "numpy", "torchvision", "tiktoken")


def git_commit(root: Path = PROJECT_ROOT) -> str | None:
    """HEAD's hash, with "-dirty" when tracked files differ from it; None outside a git tree.
    Files under results/ do not count: they are what tables write, never what a run reads."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":(exclude)results"],
                               cwd=root, capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    """The CPU's model name (platform.processor() is empty on most Linux systems)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device=None) -> dict:
    """CUDA/cuDNN versions and the name of the device the run uses (or the CPU's)."""
    import torch

    info = {"cuda": torch.version.cuda, "cudnn": None, "device": cpu_name(), "device_count": 0}
    if torch.cuda.is_available():
        info["cudnn"] = torch.backends.cudnn.version()
        info["device_count"] = torch.cuda.device_count()
        if device is None or getattr(device, "type", str(device)) == "cuda":
            index = getattr(device, "index", None) or 0
            info["device"] = torch.cuda.get_device_name(index)
    return info


def environment(device=None) -> dict:
    """Everything that identifies the software and hardware of this process."""
    import torch

    return {
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        **device_info(device),
        # CPU kernels reduce in another order at another thread count: a run at 1 thread does
        # not repeat one made at 2 bit for bit (measured: softsign_ncp 0.6157 vs 0.6251)
        "cpu_threads": torch.get_num_threads(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
    }


# Fields that differ between the nodes of one cluster without changing what is computed.
PER_NODE_FIELDS = ("host", "os", "device_count")


def environment_label(env: dict | None) -> str:
    """One line that tells environments apart (host and node details left out)."""
    if not env:
        return "not recorded"
    libs = env.get("libraries") or {}
    parts = [f"commit {str(env.get('git_commit'))[:12]}"
             + ("-dirty" if str(env.get("git_commit")).endswith("-dirty") else ""),
             *([f"code {env['code_version']}"] if env.get("code_version") else []),
             f"python {env.get('python')}", f"torch {env.get('torch')}"]
    if env.get("cuda"):
        parts.append(f"CUDA {env['cuda']}" + (f", cuDNN {env['cudnn']}" if env.get("cudnn")
                                              else ""))
    parts.append(str(env.get("device")))
    parts += [f"{name} {version}" for name, version in sorted(libs.items()) if version]
    return ", ".join(parts)
