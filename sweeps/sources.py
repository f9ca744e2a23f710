"""Where each paper-scale setting of a table spec comes from.

Every scale but `tiny` (the miniature) claims to be a paper's setting, so it carries a
`sources:` block that names, for each setting below, one source:

    paper: <section / table / figure>    the paper states it
    code: <repository path>              the authors' code sets it
    assumption: <why this value>         neither does: our choice, and why
    na: <why>                            the setting does not apply (images have no sequence)

with an optional `note:` (e.g. how our run departs from the source). The rendered table prints
the block, so a reader sees which settings are the paper's and which are ours.
"""

from __future__ import annotations

# The settings a paper-scale spec must source, with what each covers.
SETTINGS = {
    "model": "model and its size",
    "data": "training data",
    "length": "training length (tokens, steps or epochs)",
    "batch": "batch size",
    "sequence_length": "sequence length",
    "lr_grid": "learning-rate grid",
    "betas": "betas / momentum (and the auxiliary Adam's)",
    "weight_decay": "weight decay",
    "schedule": "lr schedule and warm-up",
    "clipping": "gradient clipping",
    "precision": "numeric formats (matmuls, weights, gradients, optimizer state)",
    "seeds": "seeds",
    "eval": "evaluation protocol",
    "metric": "reported metric",
    "paper_numbers": "the paper's numbers",
}
KINDS = ("paper", "code", "assumption", "na")


def validate(table: str, scale: str, sources) -> None:
    """Raise ValueError naming the table, scale and setting at fault."""
    where = f"table {table}, scale {scale}"
    if not isinstance(sources, dict):
        raise ValueError(f"{where}: a paper-scale spec needs a `sources:` block naming, for each "
                         f"of {list(SETTINGS)}, one of {list(KINDS)}")
    unknown = sorted(set(sources) - set(SETTINGS))
    if unknown:
        raise ValueError(f"{where}: unknown sources {unknown}; the settings are {list(SETTINGS)}")
    missing = [s for s in SETTINGS if s not in sources]
    if missing:
        raise ValueError(f"{where}: settings without a source: {missing}; give each one of "
                         f"{list(KINDS)}")
    for setting, entry in sources.items():
        kinds = [k for k in KINDS if k in (entry or {})]
        extra = sorted(set(entry or {}) - set(KINDS) - {"note"})
        if len(kinds) != 1 or extra or not str(entry[kinds[0]]).strip():
            raise ValueError(f"{where}: sources.{setting} must have exactly one of {list(KINDS)} "
                             f"(a non-empty text) and optionally `note`; got {entry!r}")


def kind(entry: dict) -> str:
    return next(k for k in KINDS if k in entry)


LABELS = {"paper": "paper", "code": "authors' code", "assumption": "**assumption**",
          "na": "not applicable"}


def markdown(by_scale: dict[str, dict]) -> list[str]:
    """The sources of the given scales ({scale: its sources block}) as markdown lines, a section
    per scale."""
    lines = []
    for scale, sources in by_scale.items():
        if not sources:
            continue
        counts = {k: sum(kind(e) == k for e in sources.values()) for k in KINDS}
        lines += [f"### Settings of scale `{scale}` and their sources", "",
                  f"{counts['paper']} from the paper, {counts['code']} from the authors' code, "
                  f"{counts['assumption']} assumptions (ours, not the paper's), "
                  f"{counts['na']} not applicable.", "",
                  "| setting | source | what it says |", "|---|---|---|"]
        for setting, entry in sources.items():
            k = kind(entry)
            text = str(entry[k]) + (f" — {entry['note']}" if entry.get("note") else "")
            lines.append(f"| {SETTINGS[setting]} | {LABELS[k]} | {text.replace('|', '/')} |")
        lines.append("")
    return lines
