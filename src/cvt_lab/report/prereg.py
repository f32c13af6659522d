"""Pre-registration: what a table's confirmation run is, fixed in a file before the run (experiments/prereg/).

    python -m cvt_lab.prereg table5 [--scale cpu]   # the confirmation sweep's overrides (make tableN)

``experiments/prereg/<table>.yaml`` (``<table>_<scale>.yaml`` for scales other than cpu) registers the sweep
(experiment, overrides: data, split seed, epochs, recipe; the rows; the seeds), the metric, alpha, the family
corrected together, the margin of every "no difference" (equivalence) and non-inferiority row, the smallest effect
of interest, the gates (ceiling: the best end, a floor for a lower-is-better metric such as CER; chance margin),
the controls and the contrasts. ``make tableN`` (``make htr_ablation_*``) runs exactly that sweep and
every job records the file's sha256 (``prereg`` in results.json). The report calls a setting *confirmatory*
only when the file is committed before the first job started, every job carries its hash, and every job's
run identity is the one the registered sweep composes to; else *exploratory*, with the reasons.
Changing a registered setting means a new file; earlier settings and their verdicts stay in
``experiments/prereg/ledger.yaml``, which the report prints. docs/ablations.md explains the protocol.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cvt_lab.report.metrics import metric_of

PREREG_DIR = Path("experiments/prereg")
LEDGER = "ledger.yaml"
# Pilots choose settings; confirmations use seeds from here on (and a split seed no pilot used).
FIRST_CONFIRMATION_SEED = 100


@dataclass
class Contrast:
    """A registered linear contrast of row means, e.g. an ordering: ``sum_r weights[r] * mean_r``."""

    name: str
    weights: dict[str, float]  # option -> weight (summing to zero)
    expect: str  # "+" or "-": the paper's sign of the contrast
    claim: str = ""  # what it tests, in words


@dataclass
class Prereg:
    table: str
    scale: str
    experiment: str
    metric: str  # the table's metric (cvt_lab.report.metrics): test/acc1 or test/cer; pilots read val/...
    overrides: list[str]  # the sweep's Hydra overrides beyond experiment, scale, rows and seeds
    rows: list[str]  # the options of the table's axis that run
    seeds: list[int]
    alpha: float
    family: str  # tests corrected together (Holm) across every table registering the same family
    smallest_effect: float  # points: the smallest difference of interest (what the seeds were sized for)
    # option -> margin in points, for every "no difference" row (equivalence: +/- margin) and non-inferiority row
    margins: dict[str, float]
    # % at the metric's best end: a compared-with row at or beyond it cannot show a gain (not judged): at or above
    # it for accuracy (97), at or below it for CER (1); the metric's default where the file gives none
    ceiling: float | None = None
    chance_margin: float = 5.0  # points from chance (towards the good end) within which a row is not judged
    controls: list[str] = field(default_factory=list)  # rows judged whatever the gates; outside the claim
    contrasts: list[Contrast] = field(default_factory=list)
    registered: str = ""  # date
    rationale: str = ""  # why these settings: the pilots (validation split, seeds < 100) and the sizing
    path: Path = Path()


class PreregError(ValueError):
    """A pre-registration file that cannot be used: the message names the problem and the fix."""


def prereg_path(table: str, scale: str, root: Path = PREREG_DIR) -> Path:
    return Path(root) / (f"{table}.yaml" if scale == "cpu" else f"{table}_{scale}.yaml")


def load_prereg(path: Path) -> Prereg:
    """Read and check a pre-registration file."""
    path = Path(path)
    try:
        raw: dict[str, Any] = OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # type: ignore[assignment]
    except Exception as e:  # noqa: BLE001 - YAML and OmegaConf raise many kinds; one message for all
        raise PreregError(f"{path}: not a readable pre-registration ({e})") from None
    required = ["table", "scale", "experiment", "metric", "rows", "seeds", "alpha", "family", "smallest_effect"]
    missing = [k for k in required if raw.get(k) is None]
    if missing:
        raise PreregError(f"{path}: missing {', '.join(missing)}; every pre-registration fixes them (see "
                          "docs/ablations.md, 'The confirmation protocol')")
    raw["contrasts"] = [Contrast(**c) for c in raw.get("contrasts") or []]
    raw["overrides"] = [str(o) for o in raw.get("overrides") or []]
    raw["margins"] = {str(k): float(v) for k, v in (raw.get("margins") or {}).items()}
    known = set(Prereg.__dataclass_fields__) - {"path"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PreregError(f"{path}: unknown keys {unknown}; the keys are {sorted(known)}")
    prereg = Prereg(**raw, path=path)
    try:
        metric = metric_of(prereg.metric)
    except ValueError as e:
        raise PreregError(f"{path}: {e}") from None
    if prereg.ceiling is None:
        prereg.ceiling = metric.default_ceiling
    if not 0 <= prereg.ceiling <= 100:
        raise PreregError(f"{path}: ceiling={prereg.ceiling}: a % of {prereg.metric} (its best end: "
                          f"{'higher' if metric.higher_is_better else 'lower'} is better)")
    low = [s for s in prereg.seeds if s < FIRST_CONFIRMATION_SEED]
    if low:
        raise PreregError(f"{path}: seeds {low} are pilot seeds; a confirmation uses seeds >= "
                          f"{FIRST_CONFIRMATION_SEED} (pilots use those below)")
    if len(set(prereg.seeds)) < 2:
        raise PreregError(f"{path}: {len(set(prereg.seeds))} seed(s); register at least two (sized from pilots)")
    if not 0 < prereg.alpha < 0.5:
        raise PreregError(f"{path}: alpha={prereg.alpha}; a level between 0 and 0.5, e.g. 0.05")
    for c in prereg.contrasts:
        if c.expect not in ("+", "-") or abs(sum(c.weights.values())) > 1e-9:
            raise PreregError(f"{path}: contrast {c.name}: weights must sum to zero and expect be '+' or '-'")
    return prereg


def find_prereg(table: str, scale: str, root: Path = PREREG_DIR) -> Prereg | None:
    path = prereg_path(table, scale, root)
    return load_prereg(path) if path.is_file() else None


def sweep_overrides(prereg: Prereg, axis: str) -> list[str]:
    """The command line of the registered sweep (``python -m cvt_lab OVERRIDES -m``)."""
    return [f"experiment={prereg.experiment}", f"scale={prereg.scale}", *prereg.overrides,
            f"{axis}={','.join(prereg.rows)}", f"seed={','.join(str(s) for s in prereg.seeds)}",
            f"prereg={prereg.path}"]


def registered_identities(prereg: Prereg, axis: str) -> dict[tuple[str, int], str]:
    """(row option, seed) -> the run identity the registered sweep composes to, today. Each row is composed once
    (with the first seed): the seed enters a config only as ``seed``, so the other seeds' identities follow."""
    from omegaconf import open_dict

    from cvt_lab.plan.jobs import compose_sweep
    from cvt_lab.results import identity_of

    first = Prereg(**{**prereg.__dict__, "seeds": prereg.seeds[:1]})
    out = {}
    for job in compose_sweep(sweep_overrides(first, axis)).jobs:
        row = dict(o.split("=", 1) for o in job.overrides if "=" in o)[axis]
        for seed in prereg.seeds:
            with open_dict(job.config):
                job.config.seed = seed
            out[(row, seed)] = identity_of(job.config)[0]
    return out


@dataclass
class Commit:
    sha: str
    date: datetime  # the committer's date

    @property
    def short(self) -> str:
        return self.sha[:10]


def commit_that_added(path: Path) -> Commit | None:
    """The commit that added ``path`` with its present contents (the last commit touching it), if it is
    committed and unchanged since; None for a file git does not hold as it is now."""
    try:
        path = Path(path).resolve()
        cwd = path.parent
        dirty = subprocess.run(["git", "status", "--porcelain", "--", path.name], cwd=cwd, capture_output=True,
                               text=True, timeout=30)
        if dirty.returncode != 0 or dirty.stdout.strip():
            return None
        log = subprocess.run(["git", "log", "-1", "--format=%H %cI", "--", path.name], cwd=cwd,
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if log.returncode != 0 or not log.stdout.strip():
        return None
    sha, date = log.stdout.split()
    return Commit(sha, datetime.fromisoformat(date))


def ledger_entries(table: str, scale: str, root: Path = PREREG_DIR) -> list[dict[str, Any]]:
    """The table's earlier settings and their verdicts, oldest first (experiments/prereg/ledger.yaml)."""
    path = Path(root) / LEDGER
    if not path.is_file():
        return []
    entries = OmegaConf.to_container(OmegaConf.load(path), resolve=True) or []
    return [e for e in entries if e.get("table") == table and e.get("scale", "cpu") == scale]  # type: ignore[union-attr]


def _experiment_file(name: str) -> Path:
    from cvt_lab.paths import config_dir

    return config_dir() / "experiment" / f"{name}.yaml"


def experiment_axis(name: str) -> str:
    """The config group whose options are the rows of experiment ``name``."""
    return str(OmegaConf.load(_experiment_file(name)).experiment.axis)




def provenance(jobs: list, prereg: Prereg | None, sha256: str | None, commit: Commit | None,
               registered: dict[tuple[str, int], str] | None, metric: str) -> list[str]:
    """Why a setting's jobs are not a confirmation of ``prereg`` (empty: they are). ``jobs``: the setting's
    report jobs (cvt_lab.report.jobs.Job); ``registered``: (row, seed) -> identity, from the registered sweep."""
    if prereg is None:
        return ["no pre-registration for this table and scale (experiments/prereg/)"]
    reasons = []
    if commit is None:
        reasons.append(f"{prereg.path} is not committed as it is now (a registration is a commit before the runs)")
    if metric != prereg.metric:
        reasons.append(f"the report's metric {metric} is not the registered {prereg.metric}")
    started = sorted(j.started_at for j in jobs if j.started_at)
    if commit is not None and started and datetime.fromisoformat(started[0]) < commit.date:
        reasons.append(f"a job started ({started[0]}) before the registration's commit ({commit.date.isoformat()})")
    unhashed = [j.run_dir for j in jobs if j.prereg_sha256 != sha256]
    if unhashed:
        reasons.append(f"{len(unhashed)} of {len(jobs)} jobs do not carry the registration's sha256 "
                       f"(e.g. `{unhashed[0]}`)")
    if registered is not None:
        changed = [j.run_dir for j in jobs if j.identity is None or registered.get((j.row, j.seed)) != j.identity]
        if changed:
            reasons.append(f"{len(changed)} of {len(jobs)} jobs do not match the registered run identity "
                           f"(another row, seed or configuration; e.g. `{changed[0]}`)")
    return reasons
