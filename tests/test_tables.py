"""Paper tables: specs, fair-tuning expansion, ablation overrides, and a miniature table end to
end (runs → collect → rendered files), re-rendered without new runs."""

import gzip
import json

import pytest
import yaml

from sweeps import records, sources, table
from sweeps.compose import compose_runs
from sweeps.reproduce import reproduce
from tasks.train import store
from tasks.train.environment import CODE_PACKAGES, code_version
from tests.conftest import TINY

MINI = {
    "name": "mini", "title": "Mini table", "claim": "S3 and AdamW both train",
    "scales": {"tiny": {"label": "test miniature",
                        "overrides": [*TINY, "steps=12", "eval_every=6", "log_every=2"]}},
    "optimizers": {"adamw": {"lr": [1e-3, 3e-3]}, "s3": {"lr": [1e-3, 3e-3]}},
    "seeds": [0, 1],
    "metric": {"key": "final.val_loss", "mode": "min", "label": "val loss"},
    "report": ["spikes.spike_count"],
    "paper": {"adamw": 1.23},
}
MINI["scales"]["paper"] = {
    "label": "test paper scale", "overrides": [*TINY, "steps=24"],
    "sources": {**{k: {"paper": f"{k} from the paper"} for k in sources.SETTINGS},
                "lr_grid": {"assumption": "lr grid ours"}}}


@pytest.fixture
def mini_table(tmp_path, monkeypatch):
    folder = tmp_path / "tables"
    folder.mkdir()
    (folder / "mini.yaml").write_text(yaml.safe_dump(MINI))
    monkeypatch.setattr(table, "TABLE_DIR", folder)
    return table.load_spec("mini")


@pytest.mark.parametrize("name", table.available())
def test_every_committed_spec_expands_into_valid_distinct_runs(name):
    spec = table.load_spec(name)
    for scale in spec["scales"]:
        runs = table.expand(spec, scale)
        per_optim = len(spec.get("lr_multipliers") or []) or table.budget(
            next(iter(table.optimizers(spec, scale).values())))
        variants = spec["scales"][scale].get("variants", spec.get("variants")) or {"": []}
        seeds = spec["scales"][scale].get("seeds", spec["seeds"])
        assert len(runs) == (len(table.optimizers(spec, scale)) * per_optim * len(seeds)
                             * len(variants))
        # every run composes and validates (the same check a launch makes), keys distinct
        composed = compose_runs([r.overrides for r in runs])
        assert len({store.run_key(cfg) for _, cfg in composed}) == len(runs)
        metric = table.for_scale(spec, scale)["metric"]
        assert metric["mode"] in ("min", "max")


def test_unequal_lr_grids_break_the_fair_tuning_rule(tmp_path, monkeypatch):
    bad = dict(MINI, optimizers={"adamw": {"lr": [1e-3]}, "s3": {"lr": [1e-3, 3e-3]}})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    monkeypatch.setattr(table, "TABLE_DIR", tmp_path)
    with pytest.raises(ValueError, match="same budget"):
        table.load_spec("bad")
    with pytest.raises(ValueError, match="available"):
        table.load_spec("nope")


def _write(tmp_path, monkeypatch, spec):
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setattr(table, "TABLE_DIR", tmp_path)


def test_a_scale_may_drop_optimizers_but_not_those_its_verdict_compares(tmp_path, monkeypatch):
    tiny = {**MINI["scales"]["tiny"], "drop": ["adamw"]}
    _write(tmp_path, monkeypatch, dict(MINI, name="t", scales={**MINI["scales"], "tiny": tiny}))
    spec = table.load_spec("t")
    assert {r.optim for r in table.expand(spec, "tiny")} == {"s3"}
    assert {r.optim for r in table.expand(spec, "paper")} == {"s3", "adamw"}

    unknown = {**tiny, "drop": ["lion"]}
    _write(tmp_path, monkeypatch, dict(MINI, name="t", scales={**MINI["scales"], "tiny": unknown}))
    with pytest.raises(ValueError, match=r"drop names \['lion'\]"):
        table.load_spec("t")

    verdict = {"kind": "better", "row": "s3", "than": "adamw"}
    _write(tmp_path, monkeypatch, dict(MINI, name="t", verdict=verdict,
                                       scales={**MINI["scales"], "tiny": tiny}))
    with pytest.raises(ValueError, match=r"drop removes \['adamw'\]"):
        table.load_spec("t")


def test_ablation_overrides_make_distinct_runs(mini_table):
    base = table.expand(mini_table, "tiny")
    p2 = table.expand(mini_table, "tiny", ["optim.p=2"])
    assert [r.overrides[-1] for r in p2 if r.optim == "s3"] == ["optim.p=2"] * 4
    assert all("optim.p=2" not in r.overrides for r in p2 if r.optim == "adamw")
    only = table.expand(mini_table, "tiny", ["optim=s3", "optim.nesterov=false"])
    assert {r.optim for r in only} == {"s3"} and len(only) == 4
    assert {tuple(r.overrides) for r in base}.isdisjoint({tuple(r.overrides) for r in p2
                                                          if r.optim == "s3"})
    with pytest.raises(ValueError, match="no optimizer"):
        table.expand(mini_table, "tiny", ["optim.sign_fraction=0.5"])
    with pytest.raises(ValueError, match="scale"):
        table.expand(mini_table, "huge")


def test_miniature_table_end_to_end(mini_table, tmp_path, data_root, monkeypatch):
    spec = dict(MINI, extend_edges=1, verdict={"kind": "better", "row": "s3", "than": "adamw"})
    _write(tmp_path / "tables", monkeypatch, spec)
    results = tmp_path / "results"
    where = [f"runs_root={tmp_path / 'runs'}", f"data_root={data_root}", "launcher=debug"]
    assert reproduce("mini", where, "test", results=results) == 0
    out = results / "mini" / "tiny"  # runs_root/data_root are not an ablation: no suffix
    md = (out / "table.md").read_text()
    assert "Miniature" in md and "commit" in md and "machine" in md
    # the paper scale's sources, under the miniature, each setting with its kind
    assert "stands in for" in md and "| learning-rate grid | **assumption** | lr grid ours |" in md
    assert "Tuned, per optimizer (2 configuration(s) each" in md
    # two seeds: the verdict cannot be decided, and says why
    assert "**Verdict: inconclusive — val loss: s3" in md and "fewer than 3 seeds" in md
    assert "seed noise" in md and "1.23" in md  # the paper's number, in its own column
    # a two-point grid always has its best on an edge: one more lr per row, then flagged
    data = records.read(out)
    assert {label: len(grid) for label, grid in data["grids"].items()} == {"adamw": 3, "s3": 3}
    assert len(data["runs"]) == 12 and "Grids widened after seeing results" in md
    widened = next(line for line in md.splitlines() if line.startswith("Grids widened"))
    assert "adamw +{" in widened and "s3 +{" in widened
    assert (out / "table.csv").read_text().splitlines()[0].startswith("row,best lr")
    assert (out / "loss_curves.png").stat().st_size > 0
    assert (out / "metric_vs_lr.png").stat().st_size > 0
    assert "| [mini](mini/tiny/table.md) | tiny | inconclusive | 12 |" in (
        results / "README.md").read_text()
    # a second call submits nothing, and renders the same table from the same runs
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "table.md"}
    assert reproduce("mini", where, "test", results=results) == 0
    # from the records alone, on a machine without the runs: the same bytes
    committed = {p.name: p.read_bytes() for p in out.iterdir()}
    import shutil

    shutil.rmtree(tmp_path / "runs")
    assert reproduce("mini", [], "test", render_only=True, results=results) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == committed
    assert set(before) <= set(committed)


def test_a_run_that_diverges_mid_way_is_a_result_of_the_table(mini_table, tmp_path, data_root,
                                                               monkeypatch):
    """AdamW at 3e-3, seed 1, loses its loss to NaN at step 8 of 12 (after good steps): its
    setting has a diverged seed, the other lr is chosen, and nothing fails."""
    from tasks.train.loop import Trainer

    real_step = Trainer.train_step

    def train_step(self, step, time_optimizer=True):
        loss, grad_norm = real_step(self, step, time_optimizer)
        if self.cfg.optim.name == "adamw" and self.cfg.optim.lr == 3e-3 and self.cfg.seed == 1 \
                and step >= 7:
            loss = loss * float("nan")
        return loss, grad_norm

    monkeypatch.setattr(Trainer, "train_step", train_step)
    results = tmp_path / "results"
    where = [f"runs_root={tmp_path / 'runs'}", f"data_root={data_root}", "launcher=debug"]
    assert reproduce("mini", where, "test", results=results) == 0
    data = records.read(results / "mini" / "tiny")
    [diverged] = [e["summary"] for e in data["runs"] if e["summary"]["status"] == "diverged"]
    assert diverged["diverged_at"] == 8 and diverged["steps_done"] == 8
    assert [e["step"] for e in diverged["evals"]] == [6]  # the eval before it is kept
    md = (results / "mini" / "tiny" / "table.md").read_text()
    assert "- adamw: 0.001 → 5.1" in md and "0.003 → – [diverged 1]" in md
    adamw = next(line for line in md.splitlines() if line.startswith("| adamw"))
    assert "| 0.001 (on the low edge) |" in adamw and "| 2 | 1 |" in adamw  # 1 diverged run


def _damage_gzip(blob: bytes) -> bytes:
    return blob[: len(blob) // 2]


def _records_with(change):
    def damage(blob: bytes) -> bytes:
        data = json.loads(gzip.decompress(blob))
        change(data)
        return gzip.compress(json.dumps(data).encode())
    return damage


RECORD_DAMAGE = {
    "truncated": (_damage_gzip, r"records.json.gz is not a whole gzip file"),
    "garbled": (lambda blob: bytes(b ^ 0x5A for b in blob), r"is not a whole gzip file"),
    "not-json": (lambda blob: gzip.compress(b"table rows: 12"), r"does not hold JSON"),
    "bad-row": (_records_with(lambda d: d["runs"][3]["metrics"].append({"loss": 1.0})),
                r"records.json.gz: run 3 \(adamw\): metrics\[\d+\] must be an object with "
                r"an integer step"),
    "no-status": (_records_with(lambda d: d["runs"][5]["summary"].pop("status")),
                  r"records.json.gz: run 5 \(s3\): summary must be null or a summary"),
    "no-metric": (_records_with(lambda d: d["runs"][2]["summary"]["final"].pop("val_loss")),
                  r"records.json.gz: run 2 \(adamw, optim.lr=0.003 seed=0\): a completed run "
                  r"without the table's metric 'final.val_loss'"),
}


@pytest.mark.parametrize("damage", list(RECORD_DAMAGE))
def test_damaged_records_are_refused_naming_the_file_the_run_and_the_field(
        mini_table, tmp_path, data_root, damage):
    results = tmp_path / "results"
    where = [f"runs_root={tmp_path / 'runs'}", f"data_root={data_root}", "launcher=debug"]
    assert reproduce("mini", where, "test", results=results) == 0
    path = results / "mini" / "tiny" / records.RECORDS_FILE
    change, message = RECORD_DAMAGE[damage]
    path.write_bytes(change(path.read_bytes()))
    with pytest.raises(ValueError, match=message):
        reproduce("mini", [], "test", render_only=True, results=results)


def test_render_only_refuses_records_of_another_spec_or_mixed_code(mini_table, tmp_path,
                                                                   data_root, monkeypatch):
    results = tmp_path / "results"
    where = [f"runs_root={tmp_path / 'runs'}", f"data_root={data_root}", "launcher=debug"]
    assert reproduce("mini", where, "test", results=results) == 0
    out = results / "mini" / "tiny"
    data = records.read(out)
    data["runs"][0]["summary"]["code_version"] = "0123456789ab"
    records.write(out, data)
    with pytest.raises(ValueError, match="different optimizer/task code: 0123456789ab"):
        reproduce("mini", [], "test", render_only=True, results=results)
    data["allow_mixed"] = True
    records.write(out, data)
    assert reproduce("mini", [], "test", render_only=True, results=results) == 0
    assert "0123456789ab (1 runs)" in (out / "table.md").read_text()
    _write(tmp_path / "tables", monkeypatch, dict(MINI, seeds=[0, 1, 2]))
    with pytest.raises(ValueError, match="another version of conf/table/mini.yaml"):
        reproduce("mini", [], "test", render_only=True, results=results)


def test_the_run_key_changes_with_the_optimizer_and_task_code(tmp_path, tiny_cfg):
    tiny_cfg = tiny_cfg()
    assert store.run_key(tiny_cfg, code="aaaa") != store.run_key(tiny_cfg, code="bbbb")
    assert store.run_key(tiny_cfg) == store.run_key(tiny_cfg, code=code_version())
    for package in CODE_PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "m.py").write_text("x = 1\n")
    (tmp_path / "sweeps").mkdir()
    first = code_version.__wrapped__(tmp_path)
    (tmp_path / "sweeps" / "m.py").write_text("launching code does not count\n")
    assert code_version.__wrapped__(tmp_path) == first
    (tmp_path / "optim" / "m.py").write_text("x = 2\n")
    assert code_version.__wrapped__(tmp_path) != first


def _row(label, **extra):
    return table.Row(table.RowKey(label), 1e-3, 1.0, 0.0, 1, 0, extra, {1e-3: 1.0}, [])


def test_ratio_columns_use_the_best_baseline_that_finished():
    spec = {"ratios": [
        {"key": "convergence.tokens_to_target", "versus": ["adamw", "lion"],
         "label": "speedup", "speedup": True},
        {"key": "optimizer_step_s", "versus": ["muon"], "label": "step time / muon"}]}
    rows = [_row("adamw", **{"convergence.tokens_to_target": 1000, "optimizer_step_s": 0.2}),
            _row("lion", **{"convergence.tokens_to_target": None}),  # never reached it
            _row("muon", **{"convergence.tokens_to_target": 1500, "optimizer_step_s": 0.1}),
            _row("stosignsgd", **{"convergence.tokens_to_target": 600,
                                  "optimizer_step_s": 0.12})]
    cols = table.ratio_columns(spec, rows)
    assert cols["speedup"] == pytest.approx({"adamw": 1.0, "lion": None, "muon": 1000 / 1500,
                                             "stosignsgd": 1000 / 600})
    assert cols["step time / muon"] == pytest.approx({"adamw": 2.0, "lion": None, "muon": 1.0,
                                                      "stosignsgd": 1.2})
    # no baseline finished: no reference, no numbers
    assert table.ratio_columns(spec, rows[1:2])["speedup"] == {"lion": None}


def test_a_ratio_must_name_a_reported_key_and_rows_of_the_table(tmp_path, monkeypatch):
    bad = dict(MINI, ratios=[{"key": "wall_time_s", "versus": ["adamw"], "label": "t"}])
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    monkeypatch.setattr(table, "TABLE_DIR", tmp_path)
    with pytest.raises(ValueError, match="wall_time_s"):
        table.load_spec("bad")
    bad["report"], bad["ratios"][0]["versus"] = ["wall_time_s"], ["muon"]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="muon"):
        table.load_spec("bad")


def test_a_table_asks_only_for_known_figures(tmp_path, monkeypatch):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(dict(MINI, figures=["p_per_lr"])))
    monkeypatch.setattr(table, "TABLE_DIR", tmp_path)
    with pytest.raises(ValueError, match=r"unknown figures \['p_per_lr'\]; known: \['p_per_l"):
        table.load_spec("bad")


def test_p_per_layer_figure_is_drawn_from_the_logged_p(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sweeps.render import p_per_layer_figure
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    log = store.MetricsLog(run_dir / "metrics.jsonl")
    for step in (10, 20, 30):
        log.append({"step": step, "loss": 3.0, "p/blocks.0.fc": 2.0 + step / 10, "p/head": 8.0})
    row = table.Row(table.RowKey("smuon"), 0.02, 1.0, 0.0, 1, 0, {}, {0.02: 1.0}, [run_dir])
    p_per_layer_figure([_row("muon"), row], tmp_path, plt)
    assert (tmp_path / "p_per_layer.png").stat().st_size > 0
    (tmp_path / "p_per_layer.png").unlink()
    p_per_layer_figure([_row("muon")], tmp_path, plt)  # no p logged: no figure
    assert not (tmp_path / "p_per_layer.png").exists()


def _write(tmp_path, monkeypatch, spec):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setattr(table, "TABLE_DIR", tmp_path)
    return spec["name"]


def test_a_paper_scale_must_source_every_setting(tmp_path, monkeypatch):
    import copy

    bad = copy.deepcopy(MINI)
    del bad["scales"]["paper"]["sources"]["clipping"]
    with pytest.raises(ValueError, match=r"scale paper: settings without a source: \['clipping'\]"):
        table.load_spec(_write(tmp_path, monkeypatch, bad))
    bad = copy.deepcopy(MINI)
    bad["scales"]["paper"]["sources"]["seeds"] = {"guess": "3"}
    with pytest.raises(ValueError, match=r"sources.seeds must have exactly one of \['paper', "
                                         r"'code', 'assumption', 'na'\]"):
        table.load_spec(_write(tmp_path, monkeypatch, bad))
    bad = copy.deepcopy(MINI)
    bad["scales"]["paper_big"] = {"label": "x", "overrides": []}  # a second paper scale
    with pytest.raises(ValueError, match="scale paper_big: a paper-scale spec needs a `sources:`"):
        table.load_spec(_write(tmp_path, monkeypatch, bad))


@pytest.mark.parametrize("name", table.available())
def test_every_committed_paper_scale_renders_its_sources(name):
    spec = table.load_spec(name)
    for scale in (s for s in spec["scales"] if table.is_paper_scale(s)):
        md = "\n".join(sources.markdown(spec, [scale]))
        assert all(f"| {label} |" in md for label in sources.SETTINGS.values()), scale


def test_a_tuning_search_space_expands_and_collect_picks_the_best_setting(tmp_path, monkeypatch):
    spec = dict(MINI, optimizers={"adamw": {"lr": [1e-3], "tune": {"weight_decay": [0.0, 0.1]}},
                                  "s3": {"lr": [1e-3, 3e-3]}}, seeds=[0])
    spec = table.load_spec(_write(tmp_path, monkeypatch, spec))
    runs = table.expand(spec, "tiny")
    assert [r.tuned for r in runs if r.optim == "adamw"] == [(("weight_decay", 0.0),),
                                                             (("weight_decay", 0.1),)]
    assert "optim.weight_decay=0.1" in runs[1].overrides
    dirs = {}
    for i, r in enumerate(runs):  # fake finished runs: weight decay 0.1 is better
        dirs[i] = tmp_path / f"run{i}"
        dirs[i].mkdir()
        value = 2.0 - 0.5 * dict(r.tuned).get("weight_decay", 0) - r.lr
        store.write_json(dirs[i] / "summary.json",
                         {"status": "completed", "final": {"val_loss": value}})
    rows = {r.label: r for r in table.collect(spec, runs, dirs)}
    assert rows["adamw"].best_tuned == (("weight_decay", 0.1),)
    assert rows["adamw"].mean == pytest.approx(2.0 - 0.05 - 1e-3)
    assert rows["adamw"].per_lr == {1e-3: pytest.approx(2.0 - 0.05 - 1e-3)}
    unequal = dict(spec, optimizers={"adamw": {"lr": [1e-3], "tune": {"weight_decay": [0, 0.1]}},
                                     "s3": {"lr": [1e-3]}})
    with pytest.raises(ValueError, match="search spaces differ in size"):
        table.load_spec(_write(tmp_path, monkeypatch, unequal))
    no_key = dict(spec, optimizers={"adamw": {"lr": [1e-3], "tune": {"p": [2, 3]}},
                                    "s3": {"lr": [1e-3, 3e-3]}})
    with pytest.raises(ValueError, match="adamw has no key 'p'"):
        table.load_spec(_write(tmp_path, monkeypatch, no_key))


def test_ratios_compare_rows_of_the_same_variant():
    rows = [table.Row(table.RowKey(o, v), 1e-3, 1.0, 0.0, 1, 0, {"t": t}, {1e-3: 1.0}, [])
            for o, v, t in [("adamw", "small", 100.0), ("sto", "small", 50.0),
                            ("adamw", "big", 400.0), ("sto", "big", 100.0)]]
    spec = {"ratios": [{"key": "t", "versus": ["adamw"], "speedup": True, "label": "speedup"}]}
    assert table.ratio_columns(spec, rows)["speedup"] == {
        "adamw small": 1.0, "sto small": 2.0, "adamw big": 1.0, "sto big": 4.0}


def test_update_vs_spikes_figure_is_drawn_from_the_logged_updates(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sweeps.render import update_vs_spikes_figure
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    log = store.MetricsLog(run_dir / "metrics.jsonl")
    for step in range(1, 40):
        log.append({"step": step, "loss": 9.0 if step == 30 else 3.0, "lr": 1e-3,
                    "update_max": 1e-3 * (5 if step == 30 else 0.5)})
    row = table.Row(table.RowKey("adan"), 1e-3, 1.0, 0.0, 1, 0, {}, {1e-3: 1.0}, [run_dir])
    update_vs_spikes_figure([_row("s3"), row], tmp_path, plt)
    assert (tmp_path / "update_vs_spikes.png").stat().st_size > 0
    (tmp_path / "update_vs_spikes.png").unlink()
    update_vs_spikes_figure([_row("s3")], tmp_path, plt)  # nothing logged: no figure
    assert not (tmp_path / "update_vs_spikes.png").exists()


COMMITTED = sorted(p.parent for p in (table.TABLE_DIR.parent.parent / "results").glob(
    f"*/*/{records.RECORDS_FILE}"))


@pytest.mark.parametrize("folder", COMMITTED, ids=[f"{p.parent.name}/{p.name}" for p in COMMITTED])
def test_every_committed_table_re_renders_byte_identically_from_its_records(folder, tmp_path):
    import shutil

    copy = tmp_path / "results" / folder.parent.name / folder.name
    shutil.copytree(folder, copy)
    assert reproduce(folder.parent.name, [f"scale={folder.name}"], "unused", render_only=True,
                     results=tmp_path / "results") == 0
    for name in ("table.md", "table.csv", "table.tex"):
        assert (copy / name).read_bytes() == (folder / name).read_bytes(), name
