"""The confirmation protocol as a report states it: the pre-registration the sweep is checked against, the table's
ledger of earlier settings, and how to read the verdicts (docs/ablations.md, "The confirmation protocol")."""

from __future__ import annotations

from cvt_lab.report.analysis import Analysis
from cvt_lab.report.claims import has_noninferiority, kind_of
from cvt_lab.report.metrics import Metric


def registration_lines(a: Analysis) -> list[str]:
    """The pre-registration the report checks the sweep against, and the table's ledger of earlier settings."""
    lines = []
    if a.prereg is None:
        lines += ["**Pre-registration:** none for this table and scale (experiments/prereg/): every setting below "
                  "is exploratory.", ""]
    else:
        commit = (f"added in commit `{a.commit.short}` ({a.commit.date.isoformat()})" if a.commit else
                  "**not committed as it is now**")
        p = a.prereg
        lines += [f"**Pre-registration:** `{p.path}`, sha256 `{a.sha256}`, {commit}. Registered: metric `{p.metric}`, "
                  f"seeds {p.seeds}, rows {p.rows}, alpha {p.alpha:g}, family `{p.family}`, smallest effect of "
                  f"interest {p.smallest_effect:g} points, " + _margins_text(a)
                  + f", {_ceiling_text(a.metric, p.ceiling)}, chance margin {p.chance_margin:g} points"
                  + (f", controls {p.controls}" if p.controls else "")
                  + (f", contrasts {[c.name for c in p.contrasts]}" if p.contrasts else "")
                  + f"; overrides `{' '.join(p.overrides)}`.", ""]
        if p.rationale:
            lines += [f"Why these settings (from the registration): {' '.join(p.rationale.split())}", ""]
    lines += [f"Note: {n}" for n in a.notes]
    if a.ledger:
        lines += ["Ledger (earlier settings of this table, oldest first; experiments/prereg/ledger.yaml):", "",
                  "| setting | commit | label | verdict |", "|---|---|---|---|"]
        lines += [f"| {' '.join(str(e.get('setting', '')).split())} | `{e.get('commit', '-')}` | "
                  f"{e.get('label', '-')} | {' '.join(str(e.get('verdict', '-')).split())} |" for e in a.ledger]
        lines.append("")
    return lines


def _margins_text(a: Analysis) -> str:
    """The registered margins: an equivalence row's +/- margin, a non-inferiority row's one-sided one."""
    kinds = {r["option"]: kind_of(r.get("expect")) for r in a.spec["rows"]}
    if not any(kinds.get(k) == "noninferiority" for k in a.prereg.margins):
        return "equivalence margins " + (", ".join(f"`{k}` +/-{v:g}" for k, v in a.prereg.margins.items()) or "none")
    return "margins " + ", ".join(f"`{k}` " + (f"{v:g} (non-inferiority)" if kinds.get(k) == "noninferiority" else
                                                 f"+/-{v:g} (equivalence)") for k, v in a.prereg.margins.items())


def _ceiling_text(metric: Metric, ceiling: float) -> str:
    if metric.higher_is_better:
        return f"ceiling {ceiling:g}%"
    return f"floor (the best end) {metric.label} <= {ceiling:g}%"


RULES = (
    "How to read the verdicts (cvt_lab.report.claims; docs/ablations.md, 'The confirmation protocol'): "
    "a setting is **confirmatory** only when its table's pre-registration is committed before the first job "
    "started, every job carries the registration's sha256 and every job's run identity is the one the registered "
    "sweep composes to; else **exploratory**, with the reasons. Intervals count the seeds (Welch) and the test "
    "set (per-image outcomes, paired across rows, with one pseudo-image each way so that no interval has zero "
    "width); degrees of freedom by Welch-Satterthwaite. A signed row (`+`/`-`) is a two-sided test, its p "
    "Holm-adjusted across the family (raw and adjusted p printed): **agrees** / **disagrees** when the adjusted "
    "p < alpha on the paper's / the other side, else **not separated**. A `0` row is an equivalence test (TOST) "
    "against its registered margin, its interval at 1 - 2 alpha: **equivalent** (inside +/- margin), "
    "**differs** (two-sided p < alpha), else **not shown**; without a margin it is not judged. A comparison with "
    "a row at the ceiling or within the chance margin of chance is **not judged** unless the row is a registered "
    "control (judged alone, not part of the claim). The claim: **incomplete** while registered rows or seeds are "
    "missing; **reproduces** when every test of the claim agrees or is equivalent; **does not reproduce** when "
    "one disagrees or differs; **not tested** when none is judged; else **not shown**. Effects: points, and the "
    "ratio to the paper's difference."
)
# Said after RULES where a table has non-inferiority rows, or a metric whose lower values are better.
NONINFERIORITY_RULES = (
    "A non-inferiority row (`not worse`: this row is not worse than the row it is compared with by more than its "
    "registered margin; `not better`: that row is not worse than this one by more) is a one-sided test, one half "
    "of TOST, its p Holm-adjusted with the family and its interval at 1 - 2 alpha: **non-inferior** when the "
    "adjusted p < alpha (the interval's end stays inside the margin), **inferior** when the opposite one-sided "
    "test rejects (the whole interval lies beyond the margin), else **not shown**; without a margin it is not "
    "judged; **reproduces** needs every non-inferiority row non-inferior, and an inferior one makes the claim not "
    "reproduce."
)
LOWER_IS_BETTER_RULES = (
    "Here lower is better ({label}): a difference is this row minus the row it is compared with, in {label} "
    "points, so a negative one is better; `+` / `-` mean better / worse in that direction. The test set's part "
    "pairs the rows item by item on each item's share of the {label} (a line's edits times the lines over the "
    "test set's characters, so that their mean is the {label}; stats' docstring bounds one item's contrast). "
    "The gate at the best end is a floor ({label} at or below it: not judged), and chance is {label} 100% (reading "
    "nothing). Effects: {label} points."
)


def rules(spec: dict, metric: Metric) -> str:
    """How to read the verdicts: :data:`RULES`, and what a table's non-inferiority rows or metric add."""
    extra = [NONINFERIORITY_RULES] if has_noninferiority(spec) else []
    extra += [] if metric.higher_is_better else [LOWER_IS_BETTER_RULES.format(label=metric.label)]
    return " ".join([RULES, *extra])
