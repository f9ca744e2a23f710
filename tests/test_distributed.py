"""Data-parallel checks with two gloo processes on CPU: the replica check compares the trained
parameters chunk by chunk (bounded memory), and a difference anywhere in them is found."""

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tasks.train import distributed
from tests.conftest import TINY


def spawn(fn, args, nprocs, join=True):
    """mp.spawn's processes, forked: each rank starts with this process's imports (torch)
    instead of importing them again, seconds per rank. Nothing here has made a process group
    before forking, so each child sets up its own as a spawned one would."""
    return mp.start_processes(fn, args=args, nprocs=nprocs, join=join, start_method="fork")

pytestmark = pytest.mark.slow  # subprocesses, SLURM jobs or gloo groups: minutes in all


def _replicas(rank: int, init: str, out: str, perturb: str | None) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(50, 40), torch.nn.Linear(40, 3))
        model[0].weight.requires_grad_(False)  # frozen, as a LoRA base
        with torch.no_grad():
            if rank == 1 and perturb == "trained":
                model[1].weight[2, 39] += 0.25  # the last value of a chunk-split tensor
            if rank == 1 and perturb == "frozen":
                model[0].weight[0, 0] += 1.0
        distributed.REPLICA_CHUNK = 7  # many chunks, one ending mid-tensor
        diff = distributed.replica_divergence(model, distributed.Context(rank, 2, rank))
        if rank == 0:
            torch.save(diff, out)
    finally:
        dist.destroy_process_group()


def replica_diff(tmp_path, perturb):
    out = tmp_path / f"{perturb}.pt"
    spawn(_replicas, args=(f"file://{tmp_path / f'store-{perturb}'}", str(out), perturb),
             nprocs=2, join=True)
    return torch.load(out)


def test_the_replica_check_finds_a_difference_in_the_trained_parameters_only(tmp_path):
    assert replica_diff(tmp_path, None) == 0.0
    assert replica_diff(tmp_path, "trained") == 0.25
    assert replica_diff(tmp_path, "frozen") == 0.0  # frozen weights are never updated


def test_leaving_the_group_frees_the_sharded_tensors_a_finished_run_left_in_cycles(tmp_path):
    """distributed.shutdown collects garbage after destroying the group: sharded tensors left
    in reference cycles would otherwise live until the interpreter's exit, where a gloo worker
    dropping its last reference to them aborts the process (the exits of CI's FSDP2 test)."""
    import gc
    import weakref

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    gc.disable()  # no automatic collection may free the cycle first
    try:
        sharded = distribute_tensor(torch.randn(8, 4), init_device_mesh("cpu", (1,)), [Shard(0)])
        cycle = [sharded, sharded.full_tensor()]
        cycle.append(cycle)  # as a finished trainer leaves its modules
        alive = weakref.ref(sharded)
        del sharded, cycle
        assert alive() is not None  # only a collection frees it
        distributed.shutdown()
        assert not dist.is_initialized()
        assert alive() is None
    finally:
        gc.enable()
        if dist.is_initialized():
            dist.destroy_process_group()


def test_each_rank_trains_on_its_own_gpu_made_current(monkeypatch):
    """Rank r of a data-parallel job uses cuda:local_rank and makes it the current device
    (else libraries that allocate on plain "cuda" put every rank on GPU 0)."""
    from tasks.train.assemble import rank_device

    current = []
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)  # a node's 4 GPUs, all seen
    cpu = torch.device("cpu")
    assert rank_device(cpu, distributed.Context(1, 2, 1)) == cpu and current == []
    assert rank_device(torch.device("cuda"), distributed.Context(0, 1, 0)) == \
        torch.device("cuda")  # one process: the device as resolved
    got = rank_device(torch.device("cuda"), distributed.Context(3, 4, 1))
    assert got == torch.device("cuda", 1) and current == [torch.device("cuda", 1)]
    # the scheduler gave each task one GPU: it sees one, cuda:0, whatever its local rank
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert rank_device(torch.device("cuda"), distributed.Context(3, 4, 3)) == \
        torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(RuntimeError, match="local rank 3 but this process sees 2 GPU"):
        rank_device(torch.device("cuda"), distributed.Context(3, 4, 3))


def test_the_groups_timeout_is_the_parallel_settings(monkeypatch):
    """parallel.timeout_min reaches init_process_group (torch's 10 minutes is less than a 7B
    checkpoint's barrier can take); a bad value is refused naming the key."""
    import datetime

    from tasks.train import parallel

    seen = {}
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: seen.update(kw))
    monkeypatch.setattr(distributed, "_flags_group", lambda: None)
    distributed._init(parallel.of({"parallel": {"timeout_min": 90}}).timeout_min)
    assert seen == {"backend": "gloo", "timeout": datetime.timedelta(minutes=90)}
    with pytest.raises(Exception, match="parallel.timeout_min must be a number of minutes"):
        parallel.of({"parallel": {"timeout_min": -1}})


def test_a_checkpoint_holds_and_restores_the_current_gpus_rng_only(monkeypatch):
    """Each process saves and restores the RNG of its own (current) GPU, not every device's:
    with one GPU per rank, restoring all devices from one rank's file clobbered the others.
    Checkpoints of the old format (a list per device) still load."""
    from tasks.train import loop

    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: torch.tensor([7], dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: 1 / 0)  # never all devices
    monkeypatch.setattr(torch.cuda, "set_rng_state", restored.append)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: 1 / 0)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    state = loop.rng_state()
    assert state["cuda"].tolist() == [7]
    loop.set_rng_state(state)
    old = {**state, "cuda": [torch.tensor([0], dtype=torch.uint8),
                             torch.tensor([1], dtype=torch.uint8)]}
    loop.set_rng_state(old)
    assert [t.tolist() for t in restored] == [[7], [1]]  # device 1's state from the old list


# ---------------------------------------------------------------- evaluation sharded over ranks

# Presets whose evaluation splits into an odd number of batches, so the ranks' shares differ:
# nanoGPT (3 windows batches), LoRA accuracy by greedy generation (3 batches of questions).
EVAL_PRESETS = {
    "nanogpt": [*TINY, "task.eval_batches=3"],
    "lora": ["task=lora_tiny_arith", "task.eval.limit=100", "task.eval.batch_size=40"],
}


def _evaluate(rank: int, world: int, init: str, out: str, preset: str, data_root: str) -> None:
    from tasks.lora import task as lora_task
    from tasks.train.assemble import build_task
    from tasks.train.base import EvalShard
    from tests.conftest import compose_cfg

    if world > 1:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    real_grade = lora_task.is_correct  # restored: the one-process case runs in pytest's own
    try:
        # a grade that marks a fixed third of the questions right: a question scored twice or
        # never changes the accuracy (the tiny model's own answers are all wrong at step 0)
        lora_task.is_correct = lambda completion, answer: sum(map(ord, answer)) % 3 == 0
        cfg = compose_cfg(EVAL_PRESETS[preset], data_root=data_root)
        torch.manual_seed(cfg.seed)
        task = build_task(cfg, torch.device("cpu"))
        task.eval_shard = EvalShard(rank, world)
        task.model.eval()
        with torch.no_grad():
            metrics = task.evaluate(task.model)
        if rank == 0:
            torch.save(metrics, out)
    finally:
        lora_task.is_correct = real_grade
        if world > 1:
            dist.destroy_process_group()


def evaluated(tmp_path, preset, data_root, world):
    out = tmp_path / f"{preset}-{world}.pt"
    args = (world, f"file://{tmp_path / f'store-{preset}'}", str(out), preset, str(data_root))
    if world == 1:
        _evaluate(0, *args)
    else:
        spawn(_evaluate, args=args, nprocs=world, join=True)
    return torch.load(out)


@pytest.mark.parametrize("preset", sorted(EVAL_PRESETS))
def test_two_processes_evaluate_what_one_process_does(tmp_path, data_root, preset):
    """Each rank scores its share of the eval batches and the shares are summed: the metrics
    equal one process's (up to summation order), whether or not the shares are equal."""
    if preset == "lora":
        from tasks.lora import data

        data.write_arith(tmp_path / "data" / "arith", n_train=200, n_test=100)
        data_root = tmp_path / "data"
    one = evaluated(tmp_path, preset, data_root, world=1)
    two = evaluated(tmp_path, preset, data_root, world=2)
    assert one.keys() == two.keys()
    for name in one:
        assert two[name] == pytest.approx(one[name], rel=1e-9), name
    if preset == "lora":
        assert 0 < one["arith_acc"] < 1 and one["eval_questions"] == 100


# ---------------------------------------------------------------- the lease under DDP


def _run_ranked(rank: int, port: int, cfg_yaml: str, out: str) -> None:
    import os

    from omegaconf import OmegaConf

    from tasks import run

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        run(OmegaConf.create(cfg_yaml))
        outcome = "trained"
    except Exception as e:  # noqa: BLE001 - the outcome is what the test reads
        outcome = f"{type(e).__name__}: {e}"
    finally:
        distributed.shutdown()
    with open(f"{out}.{rank}", "w") as f:
        f.write(outcome)


def test_a_run_dir_leased_elsewhere_stops_every_rank_before_ddp_setup(tiny_cfg, tmp_path):
    """Rank 0 takes the run dir's lease and tells every rank whether it did before any of them
    builds the DDP wrapper: with the lease held by another job, all ranks stop at once."""
    import socket
    import time

    from omegaconf import OmegaConf

    from tasks.train import identity, store
    from tasks.train.lease import Lease

    cfg = tiny_cfg("steps=4", "grad_accum=2")
    rdir = identity.run_dir(cfg)
    holder = Lease(rdir / store.LEASE_FILE, "the other job").acquire()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "outcome"
    t0 = time.time()
    try:
        spawn(_run_ranked, args=(port, OmegaConf.to_yaml(cfg, resolve=True), str(out)),
                 nprocs=2, join=True)
    finally:
        holder.release()
    assert time.time() - t0 < 120
    assert "LeaseHeld" in (out.parent / "outcome.0").read_text()
    assert "rank 0 could not take the lease" in (out.parent / "outcome.1").read_text()
    assert not (rdir / "metrics.jsonl").exists()


# ---------------------------------------------------------------- compile under DDP


def _compiled_steps(rank: int, init: str, out: str, data_root: str) -> None:
    import functools

    from torch._dynamo.utils import counters

    from tasks.train.assemble import build_run
    from tests.conftest import compose_cfg

    # what is checked is that the DDP wrapper is what dynamo captures and trains through, not
    # inductor's code: its AOT-autograd graphs without codegen (a cold inductor compile in two
    # ranks at once cost a minute of the suite)
    torch.compile = functools.partial(torch.compile, backend="aot_eager")
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        cfg = compose_cfg([*TINY, "task.compile=true", "grad_accum=2", "steps=2"],
                          data_root=data_root)
        _, trainer, _ = build_run(cfg, distributed.Context(rank, 2, rank))
        losses = [float(trainer.train_step(step)[0]) for step in range(2)]
        if rank == 0:
            torch.save({"wrapped": type(trainer.train_model._orig_mod).__name__,
                        "graphs": counters["stats"]["unique_graphs"], "losses": losses}, out)
    finally:
        dist.destroy_process_group()


def test_compile_applies_to_the_data_parallel_model(tmp_path, data_root):
    """task.compile=true compiles the DDP wrapper, and training goes through the compiled graph
    (the task used to compile only an unwrapped model: under DDP it ran eager, silently)."""
    out = tmp_path / "compiled.pt"
    spawn(_compiled_steps, args=(f"file://{tmp_path / 'store'}", str(out), str(data_root)),
             nprocs=2, join=True)
    got = torch.load(out)
    assert got["wrapped"] == "DistributedDataParallel"
    assert got["graphs"] > 0
    assert all(map(math.isfinite, got["losses"]))


# ---------------------------------------------------------------- DDP with stochastic noise


def _ddp_run(rank: int, port: int, cfg_yaml: str) -> None:
    import os

    from omegaconf import OmegaConf

    from tasks import run

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        run(OmegaConf.create(cfg_yaml))
    finally:
        distributed.shutdown()


@pytest.mark.slow
def test_stosignsgd_replicas_draw_the_same_noise_and_equal_one_process(tmp_path, data_root):
    """StoSignSGD's noise is a hash of (seed, step, tensor, element), never of the rank: two
    DDP replicas take the same stochastic steps (identical weights), the ones one process takes."""
    import socket

    from omegaconf import OmegaConf

    from tasks import run
    from tasks.train import identity, store
    from tests.conftest import compose_cfg

    args = [*TINY, "optim=stosignsgd", "steps=8", "grad_accum=2", "log_every=2",
            "eval_every=4"]
    single_cfg = compose_cfg(args, runs_root=tmp_path / "single", data_root=data_root)
    single = run(single_cfg)
    ddp_cfg = compose_cfg(args, runs_root=tmp_path / "ddp", data_root=data_root)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spawn(_ddp_run, args=(port, OmegaConf.to_yaml(ddp_cfg, resolve=True)), nprocs=2,
             join=True)
    summary = store.read_summary(identity.run_dir(ddp_cfg))
    assert summary["data_parallel"] == {"world_size": 2, "replica_max_abs_diff": 0.0}
    losses = {name: [r["loss"] for r in store.MetricsLog(identity.run_dir(c) / "metrics.jsonl")
                     .read()] for name, c in (("single", single_cfg), ("ddp", ddp_cfg))}
    assert losses["ddp"] == pytest.approx(losses["single"], rel=1e-4)
    assert summary["final"] == pytest.approx(single["final"], rel=1e-4)


# ---------------------------------------------------------------- FSDP2 against one process

FSDP_ARGS = ["steps=6", "grad_accum=2", "log_every=1", "eval_every=3", "checkpoint_every=3",
             "grad_clip=1.0"]


def _fsdp_run(rank: int, port: int, cfg_yaml: str, out: str) -> None:
    import os

    from omegaconf import OmegaConf

    from tasks import run
    from tasks.train import identity, snapshot
    from tasks.train.assemble import build_run

    def reload_and_gather(cfg) -> None:
        """The checkpoint loads back into shards, and gathers whole to what was saved. A
        function of its own: its sharded trainer is freed before the group is left."""
        ctx = distributed.context()
        _, trainer, _ = build_run(cfg, ctx, identity.run_dir(cfg))
        model = snapshot.whole_model_state(trainer.model_state(), ctx.is_main)
        state = snapshot.whole_optimizer_state(trainer.optimizer, ctx.is_main)
        if ctx.is_main:
            torch.save({"model": model, "optimizer": state,
                        "sharded": trainer.sharded, "step": trainer.state.step}, out)

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        cfg = OmegaConf.create(cfg_yaml)
        run(cfg)
        reload_and_gather(cfg)
    finally:
        distributed.shutdown()


def _tensors(tree):
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for k in sorted(tree, key=str) for t in _tensors(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [t for v in tree for t in _tensors(v)]
    return []


# the LoRA task twice: adapters on a frozen base (mixed requires_grad in each sharded block),
# and a full fine-tune (task.lora=null); both evaluate by greedy generation
LORA_FSDP = ["task=lora_tiny_arith", "task.eval.limit=6", "task.eval.batch_size=4",
             "task.eval.max_new_tokens=4", "task.batch_size=4"]
FSDP_CASES = {"gpt-adamw": ["optim=adamw"], "gpt-muon": ["optim=muon"],
              "gpt-signum": ["optim=signum"],
              "lora-adamw": [*LORA_FSDP, "optim=adamw", "optim.weight_decay=0"],
              "full-fine-tune-muon": [*LORA_FSDP, "task.lora=null", "optim=muon"]}


@pytest.mark.parametrize("case", sorted(FSDP_CASES))
def test_an_fsdp2_run_equals_a_single_process_run(tmp_path, data_root, case):
    """parallel=fsdp on two gloo processes: the same losses, evals, final weights and
    optimizer state as one process (torch's AdamW on DTensors, our elementwise Signum on its
    shards, Muon gathering each matrix whole; nanoGPT and the LoRA task); its checkpoint
    (parallel.checkpoint=whole) holds whole tensors and loads back into shards."""
    import socket

    from omegaconf import OmegaConf

    from tasks import run
    from tasks.lora import data
    from tasks.train import checkpoint, identity, store
    from tests.conftest import compose_cfg

    if case.startswith(("lora", "full")):
        data.write_arith(tmp_path / "data" / "arith", n_train=200, n_test=20)
        data_root, base = tmp_path / "data", []
    else:
        base = [*TINY, "task.model.n_layer=2"]  # two blocks to shard
    args = [*base, *FSDP_ARGS, *FSDP_CASES[case]]
    single_cfg = compose_cfg(args, runs_root=tmp_path / "single", data_root=data_root)
    single = run(single_cfg)
    sharded_cfg = compose_cfg([*args, "parallel=fsdp", "parallel.checkpoint=whole"],
                              runs_root=tmp_path / "fsdp", data_root=data_root)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "fsdp.pt"
    spawn(_fsdp_run, args=(port, OmegaConf.to_yaml(sharded_cfg, resolve=True), str(out)),
             nprocs=2, join=True)
    summary = store.read_summary(identity.run_dir(sharded_cfg))
    assert summary["status"] == "completed"
    assert summary["data_parallel"] == {"world_size": 2, "replica_max_abs_diff": None,
                                        "sharding": "fsdp"}
    rows = {name: store.MetricsLog(identity.run_dir(c) / "metrics.jsonl").read()
            for name, c in (("single", single_cfg), ("fsdp", sharded_cfg))}
    for a, b in zip(rows["single"], rows["fsdp"], strict=True):
        assert a.keys() == b.keys()
        for key in a.keys() - {"tokens_per_s"}:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), (a["step"], key, a, b)
    assert summary["final"] == pytest.approx(single["final"], rel=1e-4)

    reloaded = torch.load(out)
    assert reloaded["sharded"] and reloaded["step"] == 6
    saved = checkpoint.load(identity.run_dir(sharded_cfg) / "ckpt.pt")
    reference = checkpoint.load(identity.run_dir(single_cfg) / "ckpt.pt")
    for part in ("model", "optimizer"):
        got, want, back = (_tensors(saved[part]), _tensors(reference[part]),
                           _tensors(reloaded[part]))
        assert len(got) == len(want) == len(back) > 0
        for g, w, r in zip(got, want, back):
            assert g.shape == w.shape  # whole tensors in the file
            assert torch.allclose(g.float(), w.float(), rtol=1e-4, atol=1e-6)
            assert torch.equal(g, r)  # loaded into shards, gathered whole again: the same


def test_fsdp_is_refused_where_it_cannot_run_exactly():
    """An unknown sharding, an optimizer that pools over whole tensors, a 4-bit base, or one
    task to shard over: each refused with the value and what is allowed, before any job."""
    from optim import Muon, Signum, StoSignSGD
    from sweeps.launch import check_sharding
    from tasks.train import parallel
    from tasks.train import sharding_rules as sharding
    from tasks.train.errors import ConfigError

    sharding.check("fsdp", Muon)
    sharding.check("ddp", StoSignSGD)
    with pytest.raises(ConfigError, match=r"parallel.sharding must be one of \['ddp', 'fsdp'\]"):
        sharding.check("zero3", Signum)
    with pytest.raises(ConfigError, match=r"StoSignSGD cannot update sharded.*'muon'"):
        sharding.check("fsdp", StoSignSGD)
    with pytest.raises(ConfigError, match="StochasticSign cannot"):
        check_sharding("fsdp", ["optim.StochasticSign"])
    quantized = torch.nn.Linear(2, 2)
    quantized.weight = torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.uint8),
                                          requires_grad=False)
    with pytest.raises(ConfigError, match="uint8.*QLoRA"):
        sharding.check("fsdp", Muon, quantized)
    with pytest.raises(ConfigError, match=r"parallel=fsdp .* runs one; use more"):
        parallel.check({"parallel": {"sharding": "fsdp"}}, 1, "this launcher")
    with pytest.raises(ConfigError, match=r"parallel.sharding must be one of"):
        parallel.of({"parallel": {"sharding": "zero3"}})


# ---------------------------------------------------------------- a torchrun launch of train.py


def test_train_py_under_torchrun_trains_one_sharded_run_and_exits_0(tmp_path, data_root):
    """`torchrun --nproc-per-node=2 scripts/train.py ... parallel=fsdp` (gpu_check.py
    launches its data-parallel cell this way, with DDP): both ranks train one run, exit 0."""
    import subprocess
    import sys
    from pathlib import Path

    from tasks.train import identity, store
    from tests.conftest import compose_cfg

    root = Path(__file__).resolve().parent.parent
    args = [*TINY, "task.model.n_layer=2", "steps=2", "grad_accum=2", "parallel=fsdp",
            f"runs_root={tmp_path / 'runs'}", f"data_root={data_root}"]
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node=2", str(root / "scripts" / "train.py"), *args],
                         capture_output=True, text=True, cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    cfg = compose_cfg(args[:-2], runs_root=tmp_path / "runs", data_root=data_root)
    summary = store.read_summary(identity.run_dir(cfg))
    assert summary["status"] == "completed"
    assert summary["data_parallel"]["world_size"] == 2


def test_train_py_leaves_the_group_however_the_run_ends(monkeypatch, tmp_path):
    """scripts/train.py's main shuts the process group down after a run that completed and
    after one that failed: nothing of it is left to the interpreter's exit."""
    from tests.conftest import load_script

    script = load_script("train")
    monkeypatch.setattr(script, "check_launcher", lambda cfg: None)
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"runs_root": str(tmp_path), "name": "x"})
    for n, outcome in enumerate(("completed", "failed")):
        def joined_run(cfg, n=n, outcome=outcome):
            dist.init_process_group("gloo", init_method=f"file://{tmp_path / f'store{n}'}",
                                    rank=0, world_size=1)
            if outcome == "failed":
                raise ValueError("boom")
            return {"status": outcome}

        monkeypatch.setattr(script, "run", joined_run)
        monkeypatch.setattr(script, "run_dir", lambda cfg: tmp_path)
        try:
            script.main.__wrapped__(cfg)
        except SystemExit as e:
            assert (outcome, e.code) == ("failed", 1)
        assert not dist.is_initialized(), outcome


def _fsdp_interrupted(rank: int, port: int, cfg_yaml: str, stop_after: int) -> None:
    """One sharded run, stopped by SIGUSR1 on every rank after `stop_after` steps (it
    checkpoints and raises Preempted), then run again: it resumes from its checkpoint."""
    import os
    import signal

    from omegaconf import OmegaConf

    from tasks import run
    from tasks.train.errors import Preempted
    from tasks.train.loop import Trainer

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    step = Trainer.train_step

    def stopping(self, index, **kwargs):
        out = step(self, index, **kwargs)
        if index + 1 == stop_after and not getattr(Trainer, "stopped", False):
            Trainer.stopped = True
            os.kill(os.getpid(), signal.SIGUSR1)  # as SLURM signals every task
        return out

    Trainer.train_step = stopping
    try:
        cfg = OmegaConf.create(cfg_yaml)
        try:
            run(cfg)
            raise AssertionError("the run was not stopped")
        except Preempted:
            pass
        run(cfg)  # resumes
    finally:
        distributed.shutdown()


@pytest.mark.parametrize("case", ["gpt-adamw", "gpt-signum"])
def test_a_sharded_checkpoint_is_written_by_every_rank_and_resumes_bit_identically(
        tmp_path, data_root, case):
    """parallel=fsdp writes torch's distributed checkpoint: a shard file per rank, their
    digests in ckpt.pt (the publish point); stopped after 4 of 6 steps and run again, the run
    computes exactly what an uninterrupted sharded run does (torch's AdamW on DTensors, our
    Signum on plain shards)."""
    import socket

    from omegaconf import OmegaConf

    from tasks.train import checkpoint, identity, store
    from tests.conftest import compose_cfg

    args = [*TINY, "task.model.n_layer=2", *FSDP_ARGS, *FSDP_CASES[case], "parallel=fsdp"]
    results = {}
    for name, stop in (("straight", 0), ("resumed", 4)):
        cfg = compose_cfg(args, runs_root=tmp_path / name, data_root=data_root)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        target = (_fsdp_interrupted, (port, OmegaConf.to_yaml(cfg, resolve=True), stop)) \
            if stop else (_fsdp_run, (port, OmegaConf.to_yaml(cfg, resolve=True),
                                      str(tmp_path / f"{name}.pt")))
        spawn(target[0], args=target[1], nprocs=2, join=True)
        rdir = identity.run_dir(cfg)
        assert store.read_summary(rdir)["status"] == "completed"
        results[name] = (rdir, store.MetricsLog(rdir / "metrics.jsonl").read())
    rdir, resumed = results["resumed"]
    straight = results["straight"][1]
    attempts = store.read_json(rdir / "env.json")["attempts"]
    assert [a["from_step"] for a in attempts] == [0, 4]  # the second attempt resumed
    assert [r["step"] for r in resumed] == [r["step"] for r in straight] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(straight, resumed, strict=True):
        assert {k: v for k, v in a.items() if k != "tokens_per_s"} == \
            {k: v for k, v in b.items() if k != "tokens_per_s"}, (a, b)
    published = checkpoint.load(rdir / "ckpt.pt")
    shards = published["shards"]
    assert shards["world"] == 2 and "model" not in published
    folder = rdir / shards["folder"]
    assert sorted(shards["digests"]) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(shards["digests"])
    # the folders of older checkpoints are gone once nothing published names them
    previous = checkpoint.load(rdir / "ckpt.prev.pt")["shards"]["folder"]
    assert {p.name for p in rdir.glob("ckpt.shards.*")} == {shards["folder"], previous}
