"""A sweep's jobs, read from their run records, and grouped into settings: the jobs that share every part
of their configuration but the table's row and the seed, so that one table compares like with like."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cvt_lab.report.metrics import DESCRIBED, METRICS, Metric
from cvt_lab.report.stats import ItemOutcomes
from cvt_lab.results import RESULTS_FILE, RunRecord, read_outcomes
from cvt_lab.rundir import RunDir

# Overrides that never change a result (where a record has no identity, its overrides stand in for it).
NOT_IDENTITY_OVERRIDES = ("experiment", "launcher", "logger", "resume", "threads", "trainer.enable_progress_bar",
                          "hydra", "paths")
UNSET = "(not set)"
# The record field (cvt_lab.results.RunRecord) of every metric a job is read for: results.json key -> field name.
RECORD_FIELDS = {f.metadata["json"]: f.name for f in fields(RunRecord)
                 if f.metadata.get("json") in (*METRICS, *DESCRIBED)}


def covers(prefix: str, key: str) -> bool:
    """``model`` covers ``model``, ``model.dims`` and the group choice ``model/pos_embed``."""
    return key == prefix or key.startswith((prefix + ".", prefix + "/"))


def _canonical(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def override_config(overrides: list[str]) -> dict[str, str]:
    """``key -> value`` of the overrides that can change a result (``+``/``~`` prefixes dropped)."""
    out = {}
    for o in overrides:
        key, sep, value = o.lstrip("+~").partition("=")
        if sep and not any(covers(p, key) for p in NOT_IDENTITY_OVERRIDES):
            out[key] = value
    return out


@dataclass
class Job:
    run_dir: str  # relative to the sweep directory
    row: str | None
    seed: int | None
    status: str
    metrics: dict[str, float] = field(default_factory=dict)  # results.json key -> value in % (those the run has)
    error: str | None = None
    params: int | None = None
    model: str | None = None
    identity: str | None = None
    config: dict[str, str] = field(default_factory=dict)  # what defines the result, less the seed
    overrides: dict[str, str] = field(default_factory=dict)  # override_config(), less the seed
    prereg_sha256: str | None = None  # the pre-registration the job ran under (results.json ``prereg``)
    started_at: str | None = None
    path: Path | None = None  # the run directory itself

    @property
    def finished(self) -> bool:
        """Finished with a test result: a classifier's top-1 or a line recognizer's CER."""
        return self.status == "finished" and any(m.split == "test" and m.key in self.metrics for m in METRICS.values())

    @property
    def running(self) -> bool:
        return self.status == "running"

    def metric(self, name: str) -> float | None:
        """A metric of the job in % (:data:`cvt_lab.report.metrics.METRICS`, or a described one: WER)."""
        if name not in METRICS and name not in DESCRIBED:
            raise ValueError(f"metric {name!r}: the reports compare {', '.join(METRICS)}")
        return self.metrics.get(name)

    def outcomes(self, metric: Metric) -> ItemOutcomes | None:
        """The job's per-item outcomes on the metric's split (None where the run saved none)."""
        if self.path is None:
            return None
        return metric.item_outcomes(read_outcomes(self.path))


def _row(r: RunRecord, overrides: dict[str, str], axis: str, row_format: str | None) -> str | None:
    """The job's row: ``experiment.row`` where the record stores it resolved; else, for a table whose rows
    combine fields (``row_format``, e.g. ``{model}@{image_size}``), made from the record's fields (or, for
    a job that failed early, its overrides); else the axis override (older records)."""
    exp_row = (r.experiment or {}).get("row")
    if isinstance(exp_row, str) and "${" not in exp_row:
        return exp_row
    if row_format:
        fields = {"model": (r.model, "model"), "image_size": (r.image_size, "recipe.image_size"),
                  "data": (r.data, "data")}
        row = row_format.format(**{name: v if v is not None else overrides.get(key)
                                   for name, (v, key) in fields.items()})
        return None if "None" in row else row
    return overrides.get(axis)


def read_job(run_dir: Path, sweep_dir: Path, axis: str, row_format: str | None) -> Job:
    # as a reader sees it: "running" only while its process owns the directory (a killed run reads as failed)
    r = RunDir(run_dir).record() or RunRecord(status="failed", error="no results.json")
    overrides = override_config(r.overrides)
    seed = r.seed if r.seed is not None else overrides.get("seed")
    overrides.pop("seed", None)
    config = {}
    if r.identity_config:
        # identity_config is flat already (dotted keys, cvt_lab.results.identity_of); values compare as text
        config = {k: _canonical(v) for k, v in r.identity_config.items() if k != "seed" and not covers("experiment", k)}
    metrics = {key: 100 * value for key, name in RECORD_FIELDS.items() if (value := getattr(r, name)) is not None}
    return Job(str(run_dir.relative_to(sweep_dir)), _row(r, overrides, axis, row_format),
               None if seed is None else int(seed), r.status, metrics, r.error, r.params, r.model,
               r.identity if r.identity_config else None, config, overrides, (r.prereg or {}).get("sha256"),
               r.started_at, run_dir)


def read_jobs(sweep_dir: Path, axis: str, row_format: str | None = None) -> list[Job]:
    """Every job under the sweep directory, at any depth (job directories named from a
    ``model/<group>=...`` override are nested one level)."""
    sweep_dir = Path(sweep_dir)
    return [read_job(p.parent, sweep_dir, axis, row_format) for p in sorted(sweep_dir.rglob(RESULTS_FILE))]


# ---------------------------------------------------------------------------------------------- settings


@dataclass
class Setting:
    """Jobs that share everything but the row and the seed: one table."""

    parts: list[str]  # what tells this setting from the others: "recipe.epochs=2", "row c: model.dims=[...]"
    jobs: list[Job]
    by_overrides: bool = False  # older records without a run identity, grouped by their overrides

    @property
    def label(self) -> str:
        text = ", ".join(self.parts)
        if self.by_overrides:
            return "records without a run identity, grouped by their overrides" + (f": {text}" if text else "")
        return text or "one configuration"

    @property
    def seeds(self) -> list[int]:
        return sorted({j.seed for j in self.jobs if j.seed is not None})


def _covered(key: str, row_keys: list[str]) -> bool:
    return any(covers(p, key) for p in row_keys)


def splitting_keys(jobs: list[Job], row_keys: list[str], attr: str = "config") -> list[str]:
    """Keys whose values differ between the jobs where the row does not explain it: a key outside the
    row's keys that differs at all, or a row key that differs within one row."""
    configs = [(j.row, getattr(j, attr)) for j in jobs]
    out = []
    for key in sorted(set().union(*(c for _, c in configs))):
        if len({c.get(key, UNSET) for _, c in configs}) < 2:
            continue
        if _covered(key, row_keys):
            per_row = defaultdict(set)
            for row, c in configs:
                per_row[row].add(c.get(key, UNSET))
            if all(len(v) == 1 for v in per_row.values()):
                continue
        out.append(key)
    return out


def _group(jobs: list[Job], row_keys: list[str], attr: str, by_overrides: bool) -> list[Setting]:
    """Jobs that differ in a key outside the row's keys never share a table; within those groups,
    :func:`_row_variants` splits rows run in more than one variant."""
    keys = [k for k in splitting_keys(jobs, row_keys, attr) if not _covered(k, row_keys)]
    groups: dict[tuple, list[Job]] = defaultdict(list)
    for j in jobs:
        groups[tuple(getattr(j, attr).get(k, UNSET) for k in keys)].append(j)
    return [s for values, members in groups.items()
            for s in _row_variants(members, row_keys, attr, [f"{k}={v}" for k, v in zip(keys, values)], by_overrides)]


def _row_variants(jobs: list[Job], row_keys: list[str], attr: str, parts: list[str],
                  by_overrides: bool) -> list[Setting]:
    """A row run in several variants of its own keys (``model.dims`` of row c, a second checkpoint of one
    model) makes one table per variant; the rows run once are compared with each of them."""
    keys = splitting_keys(jobs, row_keys, attr)
    variants: dict[str | None, dict[tuple, list[Job]]] = defaultdict(lambda: defaultdict(list))
    for j in jobs:
        variants[j.row][tuple(getattr(j, attr).get(k, UNSET) for k in keys)].append(j)
    varying = {row: v for row, v in variants.items() if len(v) > 1}
    shared = [j for row, v in variants.items() if row not in varying for js in v.values() for j in js]
    out = []
    for combo in itertools.product(*(list(v.items()) for v in varying.values())):
        own_parts, members = list(parts), list(shared)
        for row, (values, js) in zip(varying, combo):
            differing = [(k, v) for i, (k, v) in enumerate(zip(keys, values))
                         if len({other[i] for other in varying[row]}) > 1]
            own_parts.append(f"row {row}: " + ", ".join(f"{k}={v}" for k, v in differing))
            members += js
        out.append(Setting(own_parts, members, by_overrides))
    return out


def settings(jobs: list[Job], row_keys: list[str]) -> list[Setting]:
    """Group the table's jobs by their identity less row and seed; records without an identity are
    grouped by their overrides, apart. A job that failed before its identity was recorded joins the
    setting whose jobs ran with the same overrides, where there is exactly one."""
    with_id = [j for j in jobs if j.identity is not None]
    out = _group(with_id, row_keys, "config", False) if with_id else []
    without = [j for j in jobs if j.identity is None]
    if out and without:
        seen_overrides = [(s, {tuple(sorted(_less_row(j.overrides, row_keys).items())) for j in s.jobs}) for s in out]
        rest = []
        for j in without:
            key = tuple(sorted(_less_row(j.overrides, row_keys).items()))
            matches = [s for s, seen in seen_overrides if key in seen]
            if not j.finished and len(matches) == 1:
                matches[0].jobs.append(j)
            else:
                rest.append(j)
        without = rest
    if without:
        out += _group(without, row_keys, "overrides", True)
    return sorted(out, key=lambda s: (s.by_overrides, -sum(j.finished for j in s.jobs), s.label))


def _less_row(config: dict[str, str], row_keys: list[str]) -> dict[str, str]:
    return {k: v for k, v in config.items() if not _covered(k, row_keys)}


# ---------------------------------------------------------------------------------------------- sweep


def sweep_meta(sweep_dir: Path) -> dict[str, Any]:
    """Table, scale and the last command run into the sweep directory (its multirun.yaml, from Hydra)."""
    meta: dict[str, Any] = {"table": None, "scale": None, "command": None}
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return meta
    cfg = OmegaConf.load(path)
    meta["table"] = (cfg.get("experiment") or {}).get("table")
    meta["scale"] = (cfg.get("scale") or {}).get("name")
    task = list(OmegaConf.select(cfg, "hydra.overrides.task") or [])
    # paths under the working directory as relative ones: a report names no one's home directory
    meta["command"] = " ".join(["python -m cvt_lab", *task, "-m"]).replace(f"{Path.cwd()}/", "")
    return meta
