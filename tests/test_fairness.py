"""The fair-settings rules (sweeps/fairness.py): one weight decay for every row of a miniature,
and a stated rule for the Muon family's auxiliary Adam, tied by default to the adamw row's
chosen lr, which reproduce.py tunes first."""

import shutil

import pytest
import yaml

from sweeps import fairness, records, spec
from sweeps.reproduce import reproduce
from tests.test_tables import MINI


def _load(tmp_path, **changes):
    raw = {**MINI, "name": "t", **changes}
    folder = tmp_path / "tables"
    folder.mkdir(exist_ok=True)
    (folder / "t.yaml").write_text(yaml.safe_dump(raw))
    return spec.load("t", folder)


def _scales(tiny_overrides=(), **tiny):
    return {**MINI["scales"], "tiny": {**MINI["scales"]["tiny"], **tiny, "overrides": [
        *MINI["scales"]["tiny"]["overrides"], *tiny_overrides]}}


MUON = {"adamw": {"lr": [1e-3, 3e-3]}, "muon": {"lr": [0.01, 0.02]}}


def test_a_miniature_runs_one_weight_decay_in_every_row(tmp_path, monkeypatch):
    mixed = {"adamw": {"lr": [1e-3]}, "signum": {"lr": [1e-3]}}  # 0.1 and 0 by default
    with pytest.raises(spec.SpecError, match=r"different weight decays \(adamw 0.1, signum 0\)"):
        _load(tmp_path, optimizers=mixed)
    # one value set at the scale reaches every row; the paper scale keeps the authors' values
    table = _load(tmp_path, optimizers=mixed,
                  scales=_scales(["optim.weight_decay=0"]))
    assert {o.split("=")[1] for r in table.at("tiny").expand() for o in r.overrides
            if o.startswith("optim.weight_decay=")} == {"0"}
    lines = fairness.describe(table.at("paper"), table.at("paper").expand(), {})
    assert lines == ["Weight decay: each row's own (adamw 0.1, signum 0) from its authors' "
                     "code, as the sources say (sweeps/fairness.py)."]
    # one tuned grid shared by every row is one rule too
    tuned = {o: {"lr": [1e-3], "tune": {"weight_decay": [0.0, 0.1]}} for o in ("adamw", "signum")}
    table = _load(tmp_path, optimizers=tuned).at("tiny")
    assert fairness.describe(table, table.expand(), {}) == [
        "Weight decay: tuned over {0, 0.1} for every row and every auxiliary Adam "
        "(sweeps/fairness.py)."]
    # a row's own override breaks the rule, and so does an aux Adam's different decay
    with pytest.raises(spec.SpecError, match="signum 0.05"):
        _load(tmp_path, scales=_scales(["optim.weight_decay=0"]), optimizers={
            "adamw": {"lr": [1e-3]}, "signum": {"lr": [1e-3],
                                                "overrides": ["optim.weight_decay=0.05"]}})
    with pytest.raises(spec.SpecError, match=r"muon \(aux Adam\) 0\.1"):
        _load(tmp_path, optimizers=MUON,
              scales=_scales(["optim.weight_decay=0", "optim.aux_weight_decay=0.1"]))


def test_the_muon_family_aux_lr_follows_a_stated_rule(tmp_path, monkeypatch):
    table = _load(tmp_path, optimizers=MUON,
                  scales=_scales(["optim.weight_decay=0"])).at("tiny")
    assert table.aux_rule == fairness.AuxRule("tied")  # the miniature's default
    with pytest.raises(spec.SpecError, match="tune that row first"):
        table.expand()
    runs = table.expand(aux={"": 0.003})
    assert all(("optim.aux_lr=0.003" in r.overrides) == (r.optim == "muon") for r in runs)
    assert [r.optim for r in table.expand(["optim=adamw"])] == ["adamw"] * 4  # no tie needed
    # a row that sets its own aux lr under the tie, a fixed rule the rows break, a rule the
    # table cannot follow: each refused, naming what is wrong
    own = {**MUON, "muon": {"lr": [0.01, 0.02], "overrides": ["optim.aux_lr=1e-2"]}}
    with pytest.raises(spec.SpecError, match="muon sets optim.aux_lr=1e-2, but the table ties"):
        _load(tmp_path, optimizers=own, scales=_scales(["optim.weight_decay=0"]))
    fixed = {"value": 1e-3, "source": "the authors' code"}
    with pytest.raises(spec.SpecError, match="at lr 0.01, the table's rule says 0.001"):
        _load(tmp_path, optimizers=own, aux_lr=fixed,
              scales=_scales(["optim.weight_decay=0"]))
    good = _load(tmp_path, optimizers=own, aux_lr={**fixed, "value": 1e-2},
                 scales=_scales(["optim.weight_decay=0"])).at("tiny")
    assert fairness.describe(good, good.expand(), {})[1] == (
        "Auxiliary Adam of the Muon-family rows (muon; it trains what they do not "
        "orthogonalize: embeddings, head, norms, biases, where those train): lr 0.01 for every "
        "row (the authors' code).")
    alone = {"muon": {"lr": [0.01, 0.02]}, "s3": {"lr": [1e-3, 3e-3]}}
    with pytest.raises(spec.SpecError, match="without an adamw row to tie"):
        _load(tmp_path, optimizers=alone, scales=_scales(["optim.weight_decay=0"]))
    with pytest.raises(spec.SpecError, match="is a paper scale's rule"):
        _load(tmp_path, optimizers=MUON, aux_lr="sources",
              scales=_scales(["optim.weight_decay=0"]))
    with pytest.raises(spec.SpecError, match="the table has none"):
        _load(tmp_path, aux_lr="tied")


def test_each_variant_ties_its_muon_rows_to_its_own_adamw_choice(tmp_path, monkeypatch):
    """Variants (datasets, model sizes) tune AdamW apart: a Muon row's aux Adam follows the
    AdamW row of its own variant, never another variant's."""
    from tests.test_verdicts import row

    variants = {"small": ["task.model.n_layer=1"], "big": ["task.model.n_layer=2"]}
    table = _load(tmp_path, optimizers=MUON, variants=variants,
                  scales=_scales(["optim.weight_decay=0"])).at("tiny")
    rows = [row("adamw", [1.0] * 3, 1e-3, variant="small"),
            row("adamw", [1.0] * 3, 3e-3, variant="big"),
            row("muon", [1.0] * 3, 0.01, variant="small")]
    aux = fairness.tied_lrs(rows, table.variants)
    assert aux == {"small": 1e-3, "big": 3e-3}
    runs = table.expand(aux=aux)
    tie = {r.row.variant: {o for o in r.overrides if o.startswith("optim.aux_lr=")}
           for r in runs if r.optim == "muon"}
    assert tie == {"small": {"optim.aux_lr=0.001"}, "big": {"optim.aux_lr=0.003"}}


@pytest.mark.slow
def test_reproduce_tunes_adamw_first_and_ties_the_muon_rows_aux_lr_to_its_choice(
        tmp_path, monkeypatch, data_root):
    _load(tmp_path, optimizers=MUON, extend_edges=1,
          verdict={"kind": "better", "row": "muon", "than": "adamw"},
          scales=_scales(["optim.weight_decay=0"]))
    results = tmp_path / "results"
    where = [f"runs_root={tmp_path / 'runs'}", f"data_root={data_root}", "launcher=debug"]
    assert reproduce("t", where, "test", results=results, tables=tmp_path / "tables") == 0
    out = results / "t" / "tiny"
    tabled = records.read(out)
    adamw = [r for r in tabled.runs if r.row == "adamw"]
    best = min({float(o.split("=")[1]) for r in adamw for o in r.overrides
                if o.startswith("optim.lr=")},
               key=lambda lr: sum(r.metric("final.val_loss") for r in adamw
                                  if f"optim.lr={lr:g}" in r.overrides))
    assert tabled.aux == {"": best}
    muon = [r for r in tabled.runs if r.row == "muon"]
    assert muon and all(f"optim.aux_lr={best:g}" in r.overrides for r in muon)
    assert all(r.summary["status"] == "completed" for r in tabled.runs)
    md = (out / "table.md").read_text()
    assert (f"lr tied to the adamw row's chosen lr, {best:g}: those tensors train as the "
            f"table's tuned AdamW trains them") in md
    assert "- Weight decay: 0 for every row and every auxiliary Adam" in md
    # the adamw grid the tie read is final: the second phase widens only the Muon row's
    assert len(tabled.grids["adamw"]) == 3
    committed = {p.name: p.read_bytes() for p in out.iterdir()}
    shutil.rmtree(tmp_path / "runs")
    assert reproduce("t", [], "test", render_only=True, results=results,
                     tables=tmp_path / "tables") == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == committed


@pytest.mark.slow
def test_every_committed_table_with_muon_rows_names_its_aux_lr_rule():
    for name in spec.available():
        loaded = spec.load(name)
        for scale in loaded.scales:
            table = loaded.at(scale)
            family = fairness.muon_rows(table)
            assert (table.aux_rule is not None) == bool(family), (name, scale)
            if family and not table.is_paper and "adamw" in table.optimizers:
                assert table.aux_rule.kind in ("tied", "fixed"), (name, scale)

