"""Paper tables: specs, fair-tuning expansion, ablation overrides, and a miniature table end to
end (runs → collect → rendered files), re-rendered without new runs."""

import dataclasses
import gzip
import json
import shutil

import pytest
import yaml

from sweeps import records, sources, spec
from sweeps.collect import Cell, Row, collect, ratio_columns
from sweeps.compose import compose_runs
from sweeps.records import RunRecord
from sweeps.reproduce import reproduce
from sweeps.spec import RowKey
from tasks.train import identity
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
def mini_table(tmp_path):
    folder = tmp_path / "tables"
    folder.mkdir()
    (folder / "mini.yaml").write_text(yaml.safe_dump(MINI))
    return spec.load("mini", folder)


@pytest.mark.slow
@pytest.mark.parametrize("name", spec.available())
def test_every_committed_spec_expands_into_valid_distinct_runs(name):
    loaded = spec.load(name)
    for scale in loaded.scales:
        table = loaded.at(scale)
        runs = table.expand(aux=table.placeholder_aux())  # a tied aux lr: any value
        per_optim = len(table.lr_multipliers) or next(iter(table.optimizers.values())).budget
        assert len(runs) == (len(table.optimizers) * per_optim * len(table.seeds)
                             * len(table.variants))
        # every run composes and validates (the same check a launch makes), keys distinct; a
        # paper scale's runs are validated by its plan (tests/test_plan.py plans every one)
        composed = compose_runs([list(r.overrides) for r in runs],
                                validate_runs=not spec.is_paper_scale(scale))
        assert len({identity.run_key(cfg) for _, cfg in composed}) == len(runs)
        assert table.metric.mode in ("min", "max")


def test_unequal_lr_grids_break_the_fair_tuning_rule(tmp_path):
    bad = dict(MINI, name="bad", optimizers={"adamw": {"lr": [1e-3]},
                                             "s3": {"lr": [1e-3, 3e-3]}})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="same budget"):
        spec.load("bad", tmp_path)
    with pytest.raises(ValueError, match="available"):
        spec.load("nope", tmp_path)


def _write_t(tmp_path, raw):
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(raw))


def test_a_scale_may_drop_optimizers_but_not_those_its_verdict_compares(tmp_path):
    tiny = {**MINI["scales"]["tiny"], "drop": ["adamw"]}
    _write_t(tmp_path, dict(MINI, name="t", scales={**MINI["scales"], "tiny": tiny}))
    loaded = spec.load("t", tmp_path)
    assert {r.optim for r in loaded.at("tiny").expand()} == {"s3"}
    assert {r.optim for r in loaded.at("paper").expand()} == {"s3", "adamw"}

    unknown = {**tiny, "drop": ["lion"]}
    _write_t(tmp_path, dict(MINI, name="t", scales={**MINI["scales"],
                                                                 "tiny": unknown}))
    with pytest.raises(ValueError, match=r"drop names \['lion'\]"):
        spec.load("t", tmp_path)

    verdict = {"kind": "better", "row": "s3", "than": "adamw"}
    _write_t(tmp_path, dict(MINI, name="t", verdict=verdict,
                                         scales={**MINI["scales"], "tiny": tiny}))
    with pytest.raises(ValueError, match=r"drop removes \['adamw'\]"):
        spec.load("t", tmp_path)
    for bad in ({"kind": "better", "row": "s3", "than": "lion"},
                {"kind": "better", "row": "s3 big", "than": "adamw"}):
        _write_t(tmp_path, dict(MINI, name="t", verdict=bad))
        with pytest.raises(ValueError, match="verdict.(than|row) must name rows of the table"):
            spec.load("t", tmp_path)
    _write_t(tmp_path, dict(MINI, name="t", verdict={"kind": "faster", "row": "s3",
                                                                   "than": "adamw"}))
    with pytest.raises(ValueError, match="verdict.kind must be one of"):
        spec.load("t", tmp_path)
    # an equivalence claim states what counts as equal; a claim of difference does not
    matches = {"kind": "matches", "row": "s3", "than": "adamw"}
    _write_t(tmp_path, dict(MINI, name="t", verdict=matches))
    with pytest.raises(ValueError, match="a `matches` claim needs its margin δ"):
        spec.load("t", tmp_path)
    _write_t(tmp_path, dict(MINI, name="t", verdict={**matches, "margin": {
        "value": 0.01}}))
    with pytest.raises(ValueError, match="needs a value > 0 and its source"):
        spec.load("t", tmp_path)
    _write_t(tmp_path, dict(MINI, name="t", verdict={
        "kind": "better", "row": "s3", "than": "adamw", "margin": {"value": 0.1,
                                                                   "source": "x"}}))
    with pytest.raises(ValueError, match="a margin is for `matches`"):
        spec.load("t", tmp_path)


def test_ablation_overrides_make_distinct_runs(mini_table):
    tiny = mini_table.at("tiny")
    base = tiny.expand()
    p2 = tiny.expand(["optim.p=2"])
    assert [r.overrides[-1] for r in p2 if r.optim == "s3"] == ["optim.p=2"] * 4
    assert all("optim.p=2" not in r.overrides for r in p2 if r.optim == "adamw")
    only = tiny.expand(["optim=s3", "optim.nesterov=false"])
    assert {r.optim for r in only} == {"s3"} and len(only) == 4
    assert {tuple(r.overrides) for r in base}.isdisjoint({tuple(r.overrides) for r in p2
                                                          if r.optim == "s3"})
    with pytest.raises(ValueError, match="no optimizer"):
        tiny.expand(["optim.sign_fraction=0.5"])
    with pytest.raises(ValueError, match="scale"):
        mini_table.at("huge")


@pytest.mark.slow
def test_miniature_table_end_to_end(mini_table, tmp_path, data_root):
    raw = dict(MINI, extend_edges=1, verdict={"kind": "better", "row": "s3", "than": "adamw"})
    _write(tmp_path / "tables", raw)
    results = tmp_path / "results"
    where = [f"runs_root={tmp_path / 'runs'}", f"data_root={data_root}", "launcher=debug"]
    assert reproduce("mini", where, "test", results=results, tables=mini_table.tables) == 0
    out = results / "mini" / "tiny"  # runs_root/data_root are not an ablation: no suffix
    md = (out / "table.md").read_text()
    assert "Miniature" in md and "commit" in md and "machine" in md
    assert "- compute: `12 runs, " in md and " min of run wall time, summed`" in md  # its share
    # the paper scale's sources, under the miniature, each setting with its kind
    assert "stands in for" in md and "| learning-rate grid | **assumption** | lr grid ours |" in md
    assert "Tuned, per optimizer (2 configuration(s) each" in md
    # two seeds: a t interval with 1 df, far too wide to decide; the verdict says so
    assert "**Verdict: inconclusive — s3 vs adamw: inconclusive (d " in md
    assert "paired by seed (0, 1), t with 1 df" in md
    assert "95% CI [" in md.split("Best of each set")[1] and "1.23" in md  # the paper's number
    # a two-point grid always has its best on an edge: one more lr per row, then flagged
    data = records.read(out)
    assert {label: len(grid) for label, grid in data.grids.items()} == {"adamw": 3, "s3": 3}
    assert len(data.runs) == 12 and "Grids widened after seeing results" in md
    widened = next(line for line in md.splitlines() if line.startswith("Grids widened"))
    assert "adamw +{" in widened and "s3 +{" in widened
    assert (out / "table.csv").read_text().splitlines()[0].startswith("row,best lr")
    assert (out / "loss_curves.png").stat().st_size > 0
    assert (out / "metric_vs_lr.png").stat().st_size > 0
    assert "| [mini](mini/tiny/table.md) | tiny | inconclusive | fixed | fresh | 12 |" in (
        results / "README.md").read_text()
    # a second call submits nothing, and renders the same table from the same runs
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "table.md"}
    assert reproduce("mini", where, "test", results=results, tables=mini_table.tables) == 0
    # from the records alone, on a machine without the runs: the same bytes
    committed = {p.name: p.read_bytes() for p in out.iterdir()}
    import shutil

    shutil.rmtree(tmp_path / "runs")
    assert reproduce("mini", [], "test", render_only=True, results=results,
                     tables=mini_table.tables) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == committed
    assert set(before) <= set(committed)


@pytest.mark.slow
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
    assert reproduce("mini", where, "test", results=results, tables=mini_table.tables) == 0
    data = records.read(results / "mini" / "tiny")
    [diverged] = [r.summary for r in data.runs if r.status == "diverged"]
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


@pytest.fixture(scope="module")
def mini_results(tmp_path_factory, data_root):
    """The mini table run once and rendered with its records: (its spec folder, its results);
    a test that damages them works on its own copy."""
    root = tmp_path_factory.mktemp("mini_results")
    (root / "tables").mkdir()
    (root / "tables" / "mini.yaml").write_text(yaml.safe_dump(MINI))
    where = [f"runs_root={root / 'runs'}", f"data_root={data_root}", "launcher=debug"]
    assert reproduce("mini", where, "test", results=root / "results",
                     tables=root / "tables") == 0
    return root / "tables", root / "results"


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(RECORD_DAMAGE))
def test_damaged_records_are_refused_naming_the_file_the_run_and_the_field(
        mini_results, tmp_path, damage):
    tables, made = mini_results
    results = tmp_path / "results"
    shutil.copytree(made, results)
    path = results / "mini" / "tiny" / records.RECORDS_FILE
    change, message = RECORD_DAMAGE[damage]
    path.write_bytes(change(path.read_bytes()))
    with pytest.raises(ValueError, match=message):
        reproduce("mini", [], "test", render_only=True, results=results, tables=tables)


@pytest.mark.slow
def test_render_only_refuses_records_of_another_spec_or_mixed_code(mini_results, tmp_path):
    made_tables, made = mini_results
    results, tables = tmp_path / "results", tmp_path / "tables"
    shutil.copytree(made, results)
    shutil.copytree(made_tables, tables)
    out = results / "mini" / "tiny"
    data = records.read(out)
    data.runs[0].summary["code_version"] = "0123456789ab"
    records.write(out, data)
    with pytest.raises(ValueError, match="different optimizer/task code: 0123456789ab"):
        reproduce("mini", [], "test", render_only=True, results=results, tables=tables)
    records.write(out, dataclasses.replace(data, allow_mixed=True))
    assert reproduce("mini", [], "test", render_only=True, results=results, tables=tables) == 0
    assert "0123456789ab (1 runs)" in (out / "table.md").read_text()
    _write(tables, dict(MINI, seeds=[0, 1, 2]))
    with pytest.raises(ValueError, match="another version of conf/table/mini.yaml"):
        reproduce("mini", [], "test", render_only=True, results=results, tables=tables)


def _row(label, variant="", metrics=(), **extra):
    """A collected row with one finished run at lr 1e-3 (its metric curve `metrics`)."""
    row = Row(RowKey(label, variant), extra=dict(extra))
    run = RunRecord(label, (), {"status": "completed", "final": {"val_loss": 1.0}}, metrics)
    row.cells[(1e-3, ())] = Cell(1e-3, (), [0], [run], [1.0])
    row.best = (1e-3, ())
    return row


def _ratio_table(*ratios):
    return spec.Table(name="t", title="t", claim="c", scale="tiny", scale_label="",
                      overrides=(), per_optimizer={}, optimizers={}, variants={"": ()},
                      lr_multipliers=(), seeds=(0,), metric=spec.Metric("final.val_loss"),
                      report=(), ratios=tuple(spec.Ratio(**r) for r in ratios), paper={},
                      figures=(), extend_edges=0, claim_parts=(), untested="", regime="",
                      average_rank=False, sources={})


def test_ratio_columns_use_the_best_baseline_that_finished():
    table = _ratio_table({"key": "convergence.tokens_to_target", "versus": ("adamw", "lion"),
                          "label": "speedup", "speedup": True},
                         {"key": "optimizer_step_s", "versus": ("muon",),
                          "label": "step time / muon"})
    rows = [_row("adamw", **{"convergence.tokens_to_target": 1000, "optimizer_step_s": 0.2}),
            _row("lion", **{"convergence.tokens_to_target": None}),  # never reached it
            _row("muon", **{"convergence.tokens_to_target": 1500, "optimizer_step_s": 0.1}),
            _row("stosignsgd", **{"convergence.tokens_to_target": 600,
                                  "optimizer_step_s": 0.12})]
    cols = ratio_columns(table, rows)
    assert cols["speedup"] == pytest.approx({"adamw": 1.0, "lion": None, "muon": 1000 / 1500,
                                             "stosignsgd": 1000 / 600})
    assert cols["step time / muon"] == pytest.approx({"adamw": 2.0, "lion": None, "muon": 1.0,
                                                      "stosignsgd": 1.2})
    # no baseline finished: no reference, no numbers
    assert ratio_columns(table, rows[1:2])["speedup"] == {"lion": None}


def test_a_ratio_must_name_a_reported_key_and_rows_of_the_table(tmp_path):
    bad = dict(MINI, ratios=[{"key": "wall_time_s", "versus": ["adamw"], "label": "t"}])
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="wall_time_s"):
        spec.load("mini", tmp_path)
    bad["report"], bad["ratios"][0]["versus"] = ["wall_time_s"], ["muon"]
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="muon"):
        spec.load("mini", tmp_path)


def test_a_table_asks_only_for_known_figures(tmp_path):
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(dict(MINI, figures=["p_per_lr"])))
    with pytest.raises(ValueError, match=r"unknown figures \['p_per_lr'\]; known: \['p_per_l"):
        spec.load("mini", tmp_path)


def test_a_spec_key_nothing_reads_is_refused(tmp_path):
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(dict(MINI, seed=[0])))
    with pytest.raises(ValueError, match=r"table mini: unknown keys \['seed'\]"):
        spec.load("mini", tmp_path)
    tiny = {**MINI["scales"]["tiny"], "extend_edge": 2}
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(dict(MINI, scales={**MINI["scales"],
                                                                          "tiny": tiny})))
    with pytest.raises(ValueError, match=r"scale tiny: unknown keys \['extend_edge'\]"):
        spec.load("mini", tmp_path)


def test_p_per_layer_figure_is_drawn_from_the_logged_p(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sweeps.figures import p_per_layer_figure
    log = tuple({"step": step, "loss": 3.0, "p/blocks.0.fc": 2.0 + step / 10, "p/head": 8.0}
                for step in (10, 20, 30))
    p_per_layer_figure([_row("muon"), _row("smuon", metrics=log)], tmp_path, plt)
    assert (tmp_path / "p_per_layer.png").stat().st_size > 0
    (tmp_path / "p_per_layer.png").unlink()
    p_per_layer_figure([_row("muon")], tmp_path, plt)  # no p logged: no figure
    assert not (tmp_path / "p_per_layer.png").exists()
    # the panel names the seed it drew (the tables' seeds are 42-44, not 0)
    seeded = _row("smuon", metrics=log)
    seeded.chosen.seeds[0] = 42
    recording = _Recording(plt)
    p_per_layer_figure([seeded], tmp_path, recording)
    assert recording.figures[0].axes[0].get_title().endswith("seed 42")


class _Recording:
    """matplotlib.pyplot, keeping the figures `subplots` made (the figure code closes them)."""

    def __init__(self, plt):
        self.plt, self.figures = plt, []

    def __getattr__(self, name):
        return getattr(self.plt, name)

    def subplots(self, *args, **kwargs):
        fig, axes = self.plt.subplots(*args, **kwargs)
        self.figures.append(fig)
        return fig, axes


def test_rows_equal_at_every_lr_share_one_line_with_every_label():
    from sweeps.figures import shared_lines

    a, b, c = _row("a"), _row("b"), _row("c")
    for r, v in ((a, 1.0), (b, 1.0), (c, 2.0)):
        r.per_lr = {1e-3: v, 3e-3: v + 0.5}
    assert list(shared_lines([a, b, c]).values()) == [["a", "b"], ["c"]]
    b.per_lr[3e-3] = 1.6
    assert len(shared_lines([a, b, c])) == 3


def _write(folder, raw):
    folder.mkdir(exist_ok=True)
    (folder / f"{raw['name']}.yaml").write_text(yaml.safe_dump(raw))
    return raw["name"]


def test_a_paper_scale_must_source_every_setting(tmp_path):
    import copy

    bad = copy.deepcopy(MINI)
    del bad["scales"]["paper"]["sources"]["clipping"]
    with pytest.raises(ValueError, match=r"scale paper: settings without a source: \['clipping'\]"):
        spec.load(_write(tmp_path, bad), tmp_path)
    bad = copy.deepcopy(MINI)
    bad["scales"]["paper"]["sources"]["seeds"] = {"guess": "3"}
    with pytest.raises(ValueError, match=r"sources.seeds must have exactly one of \['paper', "
                                         r"'code', 'assumption', 'na'\]"):
        spec.load(_write(tmp_path, bad), tmp_path)
    bad = copy.deepcopy(MINI)
    bad["scales"]["paper_big"] = {"label": "x", "overrides": []}  # a second paper scale
    with pytest.raises(ValueError, match="scale paper_big: a paper-scale spec needs a `sources:`"):
        spec.load(_write(tmp_path, bad), tmp_path)


@pytest.mark.parametrize("name", spec.available())
def test_every_committed_paper_scale_renders_its_sources(name):
    loaded = spec.load(name)
    for scale in (s for s in loaded.scales if spec.is_paper_scale(s)):
        md = "\n".join(sources.markdown({scale: loaded.at(scale).sources[scale]}))
        assert all(f"| {label} |" in md for label in sources.SETTINGS.values()), scale


def test_a_tuning_search_space_expands_and_collect_picks_the_best_setting(tmp_path):
    raw = dict(MINI, optimizers={"adamw": {"lr": [1e-3], "tune": {"eps": [0.0, 0.1]}},
                                 "s3": {"lr": [1e-3, 3e-3]}}, seeds=[0])
    table = spec.load(_write(tmp_path, raw), tmp_path).at("tiny")
    runs = table.expand()
    assert [r.tuned for r in runs if r.optim == "adamw"] == [(("eps", 0.0),),
                                                             (("eps", 0.1),)]
    assert "optim.eps=0.1" in runs[1].overrides
    recorded = [RunRecord(r.row.label, r.overrides, {"status": "completed", "final": {
        "val_loss": 2.0 - 0.5 * dict(r.tuned).get("eps", 0) - r.lr}}, ())
        for r in runs]  # eps 0.1 is better
    rows = {r.label: r for r in collect(table, runs, recorded)}
    assert rows["adamw"].best_tuned == (("eps", 0.1),)
    assert rows["adamw"].mean == pytest.approx(2.0 - 0.05 - 1e-3)
    assert rows["adamw"].per_lr == {1e-3: pytest.approx(2.0 - 0.05 - 1e-3)}
    unequal = dict(raw, optimizers={"adamw": {"lr": [1e-3], "tune": {"eps": [0, 0.1]}},
                                    "s3": {"lr": [1e-3]}})
    with pytest.raises(ValueError, match="search spaces differ in size"):
        spec.load(_write(tmp_path, unequal), tmp_path)
    one_row_decays = dict(raw, optimizers={"adamw": {"lr": [1e-3], "tune": {
        "weight_decay": [0.0, 0.1]}}, "s3": {"lr": [1e-3, 3e-3]}})
    with pytest.raises(ValueError, match="rows run different weight decays"):
        spec.load(_write(tmp_path, one_row_decays), tmp_path)
    no_key = dict(raw, optimizers={"adamw": {"lr": [1e-3], "tune": {"p": [2, 3]}},
                                   "s3": {"lr": [1e-3, 3e-3]}})
    with pytest.raises(ValueError, match="adamw has no key 'p'"):
        spec.load(_write(tmp_path, no_key), tmp_path)


def test_an_instability_count_keeps_a_diverged_seed_as_one_more_event(tmp_path):
    """With `count_divergence` a diverged run scores its spikes so far plus one, so one diverged
    seed stays in the paired test; without it the setting has no mean and, alone in its grid,
    takes the row out of the verdict."""
    spikes = {"key": "spikes.spike_count", "mode": "min", "resolution": 1}
    raw = dict(MINI, optimizers={"adamw": {"lr": [1e-3]}, "s3": {"lr": [1e-3]}}, seeds=[0, 1],
               metric=dict(spikes, count_divergence=True))
    table = spec.load(_write(tmp_path, raw), tmp_path).at("tiny")
    runs = table.expand()

    def record(r):
        diverged = r.optim == "s3" and r.seed == 1
        return RunRecord(r.row.label, r.overrides, {
            "status": "diverged" if diverged else "completed",
            "spikes": {"spike_count": 2 if diverged else 1}}, ())

    recorded = [record(r) for r in runs]
    rows = {r.label: r for r in collect(table, runs, recorded)}
    assert rows["s3"].chosen.values == [1, 3]  # 2 spikes, then the divergence
    assert rows["s3"].mean == pytest.approx(2.0)
    uncounted = spec.load(_write(tmp_path, dict(raw, metric=spikes)), tmp_path).at("tiny")
    assert {r.label: r.best for r in collect(uncounted, runs, recorded)}["s3"] is None
    with pytest.raises(ValueError, match=r"count_divergence must be true or false, got 'yes'"):
        spec.load(_write(tmp_path, dict(raw, metric=dict(spikes, count_divergence="yes"))),
                  tmp_path)
    with pytest.raises(ValueError, match=r"count_divergence is for a count of events, which is "
                                         r"minimized \(mode: min\); got mode 'max'"):
        spec.load(_write(tmp_path, dict(raw, metric=dict(spikes, mode="max",
                                                             count_divergence=True))), tmp_path)
    no_count = [RunRecord(r.row, r.overrides, {"status": "diverged"}, ()) for r in recorded]
    with pytest.raises(ValueError, match="a diverged run without its count"):
        collect(table, runs, no_count)


def test_ratios_compare_rows_of_the_same_variant():
    rows = [_row(o, v, t=t) for o, v, t in [("adamw", "small", 100.0), ("sto", "small", 50.0),
                                             ("adamw", "big", 400.0), ("sto", "big", 100.0)]]
    table = _ratio_table({"key": "t", "versus": ("adamw",), "speedup": True, "label": "speedup"})
    assert ratio_columns(table, rows)["speedup"] == {
        "adamw small": 1.0, "sto small": 2.0, "adamw big": 1.0, "sto big": 4.0}


def test_update_vs_spikes_figure_is_drawn_from_the_logged_updates(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sweeps.figures import update_vs_spikes_figure
    log = tuple({"step": step, "loss": 9.0 if step == 30 else 3.0, "lr": 1e-3,
                 "update_max": 1e-3 * (5 if step == 30 else 0.5)} for step in range(1, 40))
    update_vs_spikes_figure([_row("s3"), _row("adan", metrics=log)], tmp_path, plt)
    assert (tmp_path / "update_vs_spikes.png").stat().st_size > 0
    (tmp_path / "update_vs_spikes.png").unlink()
    update_vs_spikes_figure([_row("s3")], tmp_path, plt)  # nothing logged: no figure
    assert not (tmp_path / "update_vs_spikes.png").exists()


def test_update_vs_spikes_shows_each_rows_most_spiking_run_not_its_chosen_one():
    from sweeps.figures import _most_spiking_run
    calm = tuple({"step": s, "loss": 3.0, "lr": 1e-3, "update_max": 1e-4} for s in range(1, 9))
    row = _row("adamw", metrics=calm)  # chosen: lr 1e-3, no spike
    for lr, spikes in ((1e-2, 2), (1e-1, 1)):
        run = RunRecord("adamw", (), {"status": "completed", "final": {"val_loss": 2.0},
                                      "spikes": {"spike_count": spikes}}, calm)
        row.cells[(lr, ())] = Cell(lr, (), [0], [run], [2.0])
    lr, rec = _most_spiking_run(row)
    assert lr == 1e-2 and rec.get("spikes.spike_count") == 2
    calm_row = _row("s3", metrics=calm)
    calm_row.cells[(1e-2, ())] = Cell(1e-2, (), [0], [RunRecord("s3", (), {
        "status": "completed", "final": {"val_loss": 2.0}}, calm)], [2.0])
    assert _most_spiking_run(calm_row)[0] == 1e-2  # none spiked: its largest lr


COMMITTED = sorted(p.parent for p in (spec.TABLE_DIR.parent.parent / "results").glob(
    f"*/*/{records.RECORDS_FILE}"))


@pytest.mark.slow
@pytest.mark.parametrize("folder", COMMITTED, ids=[f"{p.parent.name}/{p.name}" for p in COMMITTED])
def test_every_committed_table_re_renders_byte_identically_from_its_records(folder, tmp_path,
                                                                            monkeypatch):
    import shutil

    from sweeps import render

    copy = tmp_path / "results" / folder.parent.name / folder.name
    shutil.copytree(folder, copy)
    # the text formats, compared below; the figures (matplotlib, seconds a table) are drawn by
    # the miniature tests above
    monkeypatch.setattr(render, "WRITERS", tuple(w for w in render.WRITERS
                                                 if w is not render.write_figures))
    assert reproduce(folder.parent.name, [f"scale={folder.name}"], "unused", render_only=True,
                     results=tmp_path / "results") == 0
    for name in ("table.md", "table.csv", "table.tex"):
        assert (copy / name).read_bytes() == (folder / name).read_bytes(), name


def test_coverage_lists_every_spec_and_every_paper_scale():
    """conf/table/COVERAGE.md maps the papers' experiments to specs: a new spec or paper scale
    that it does not name is a gap in that map."""
    coverage = (spec.TABLE_DIR / "COVERAGE.md").read_text()
    missing = [name for name in spec.available() if name != "quickstart"
               and f"`{name}`" not in coverage]
    assert not missing, f"COVERAGE.md does not name {missing}"
    for name in spec.available():
        scales = [s for s in spec.load(name).scales if s not in ("tiny", "paper")]
        unnamed = [s for s in scales if s not in coverage]
        assert not unnamed, f"COVERAGE.md does not name {name}'s scales {unnamed}"


def test_a_claim_of_several_pairs_is_one_holm_family(tmp_path):
    """`pairs`: each claimed row against its own (a conversion against the deterministic sign
    of its own base), the comparisons Holm-adjusted together; bad shapes are refused."""
    tiny = {**MINI["scales"]["tiny"], "overrides": [*MINI["scales"]["tiny"]["overrides"],
                                                    "optim.weight_decay=0"]}
    raw = dict(MINI, name="t", scales={**MINI["scales"], "tiny": tiny},
               optimizers={**MINI["optimizers"], "signum": {"lr": [1e-4, 3e-4]},
                                           "signsgd": {"lr": [1e-2, 3e-2]}},
               verdict={"kind": "better", "pairs": [["s3", "adamw"], ["signum", "signsgd"]]})
    _write_t(tmp_path, raw)
    part = spec.load("t", tmp_path).at("tiny").claim_parts[0]
    assert [(row.optim, [o.optim for o in than]) for row, than in part.pairs] == [
        ("s3", ["adamw"]), ("signum", ["signsgd"])]
    for bad in ([["s3", "adamw", "signum"]], [], "s3", [["s3", "nadam"]]):
        _write_t(tmp_path, dict(raw, verdict={"kind": "better", "pairs": bad}))
        with pytest.raises(ValueError, match=r"verdict\.pairs"):
            spec.load("t", tmp_path)
    _write_t(tmp_path, dict(raw, verdict={"kind": "better", "row": "s3",
                                          "pairs": [["s3", "adamw"]]}))
    with pytest.raises(ValueError, match="in place of row and than"):
        spec.load("t", tmp_path)
