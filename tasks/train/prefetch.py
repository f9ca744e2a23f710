"""Batches made ahead: while a step trains on the GPU, a background thread makes the host half
of the next micro-batch (memmap reads, window gathering) in pinned memory, so that its copy to
the device does not block and the job's CPUs are not idle.

A task opts in by splitting `train_batch(step, micro)` into `host_batch(step, micro)` (CPU
tensors, a pure function of seed, step and micro) and `device_batch(host)`; batches being pure
functions of (step, micro), making one early changes no number. The loop uses this on CUDA
devices only: on a CPU the thread would take the cores the step itself computes on.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch


def supports(task) -> bool:
    return callable(getattr(task, "host_batch", None)) and \
        callable(getattr(task, "device_batch", None))


def _pinned(host):
    if isinstance(host, torch.Tensor):
        return host.pin_memory()
    if isinstance(host, (tuple, list)):
        return type(host)(_pinned(h) for h in host)
    return host


class Prefetcher:
    """`get(step, micro, following)`: the batch of (step, micro), made ahead where it was the
    one asked for last time as `following`; then starts on `following`."""

    def __init__(self, task, pin: bool = True):
        self.task, self.pin = task, pin
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batches")
        self._ahead = None  # ((step, micro), future of its host batch)

    def _host(self, step: int, micro: int):
        host = self.task.host_batch(step, micro)
        return _pinned(host) if self.pin else host

    def get(self, step: int, micro: int, following: tuple[int, int] | None):
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == (step, micro):
            host = ahead[1].result()
        else:
            host = self._host(step, micro)
        if following is not None:
            self._ahead = (following, self._pool.submit(self._host, *following))
        return self.task.device_batch(host)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
