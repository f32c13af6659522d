"""The paper's tables: its numbers (``experiments/paper_tables.yaml``) joined with how each table is run
(its experiment config, ``conf/experiment/<name>.yaml``), and model sizes counted at the paper's
configuration of a row."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cvt_lab.paths import config_dir

PAPER_TABLES = "paper_tables.yaml"


def paper_tables_path() -> Path:
    """``experiments/paper_tables.yaml`` beside ``conf/`` (source checkout and wheel alike)."""
    return config_dir().parent / "experiments" / PAPER_TABLES


def experiment_configs() -> dict[str, tuple[str, dict]]:
    """Table name -> (experiment name, its ``experiment`` block unresolved), from ``conf/experiment/``."""
    out = {}
    for path in sorted((config_dir() / "experiment").glob("*.yaml")):
        exp = OmegaConf.load(path).get("experiment")
        # a shared base (_htr_base: experiment.model / data, no table) is no table's experiment
        if exp is not None and "table" in exp and not OmegaConf.is_missing(exp, "table"):
            out[exp.table] = (path.stem, OmegaConf.to_container(exp, resolve=False))
    return out


def row_keys(experiment: dict, extra: list[str] | None = None) -> list[str]:
    """The config keys a row of the experiment sets: the packages of the config groups its
    ``experiment.row`` names (``${hydra:runtime.choices.model/pos_embed}`` -> ``model``), the keys it
    interpolates (``${recipe.image_size}``) and the table's own ``row_keys``. A key ``k`` covers ``k``,
    ``k.*`` and the override ``k/*`` (a group choice)."""
    template = str(experiment.get("row", ""))
    groups = re.findall(r"runtime\.choices\.([\w/]+)", template)
    keys = [k for k in re.findall(r"\$\{([\w.]+)\}", template) if not k.startswith("hydra")]
    return sorted({g.split("/")[0] for g in groups} | set(keys) | set(extra or []))


def load_paper_tables(path: Path | None = None) -> dict[str, dict]:
    """Every paper table; a table that an experiment runs also gets ``experiment`` (its name), ``axis``
    and ``row_keys`` from that experiment's config."""
    tables = OmegaConf.to_container(OmegaConf.load(path or paper_tables_path()), resolve=True)
    for table, (name, exp) in experiment_configs().items():
        if table in tables:
            spec = tables[table]
            spec.update(experiment=name, axis=exp["axis"], row_keys=row_keys(exp, spec.get("row_keys")))
    return tables


def has_paper(spec: dict) -> bool:
    """Whether the table is the paper's (its numbers beside ours); ``paper: false`` marks a table of ours whose
    claims are the paper's transposed (the handwriting ablations): no paper numbers, no paper-scale sizes."""
    return spec.get("paper", True) is not False


def scale_spec(spec: dict, scale: str | None) -> dict | None:
    """What ``scale`` runs of the table (``scales.<scale>``), None: the paper's rows."""
    return (spec.get("scales") or {}).get(scale or "")


# ---------------------------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class PaperConfig:
    """The configuration a paper row's params and MACs are counted at."""

    preset: str
    size: int
    overrides: tuple[tuple[str, Any], ...] = ()


def _option_overrides(axis: str, option: str) -> dict:
    """The model arguments an option of a ``model/<group>`` sets (its defaults first); values taken from
    the scale (interpolations) are skipped: the paper's model is the preset."""
    raw = OmegaConf.load(config_dir() / axis / f"{option}.yaml")
    out: dict = {}
    for parent in raw.pop("defaults", []) or []:
        if parent != "_self_":
            out.update(_option_overrides(axis, parent))
    values = OmegaConf.to_container(raw, resolve=False)
    out.update({k: v for k, v in values.items() if not OmegaConf.is_interpolation(raw, k)})
    return out


def paper_config(spec: dict, row: dict) -> PaperConfig:
    """A row naming its own ``size`` (Tables 2, 3, 4) is its preset at that size, with the classes of its
    ``data`` where it names one; an ablation row is the table's preset at 224 with the row's option."""
    if "size" in row:
        extra = {}
        if row.get("data"):
            extra["num_classes"] = int(OmegaConf.load(config_dir() / "data" / f"{row['data']}.yaml").num_classes)
        return PaperConfig(row.get("preset", spec.get("preset")), int(row["size"]), tuple(extra.items()))
    overrides = _option_overrides(spec["axis"], row["option"])
    return PaperConfig(row.get("preset", spec["preset"]), 224, tuple((k, _freeze(v)) for k, v in overrides.items()))


def _freeze(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@cache
def count_paper_config(config: PaperConfig) -> tuple[float, float]:
    """Params (M) and GMACs of the row's paper configuration (the speed levers change no MAC count)."""
    from cvt_lab.complexity import count_preset

    c = count_preset(config.preset, config.size, **{k: list(v) if isinstance(v, tuple) else v
                                                     for k, v in config.overrides})
    return c.params / 1e6, c.macs / 1e9


def paper_config_size(spec: dict, row: dict) -> tuple[float | None, float | None]:
    """Params (M) and GMACs of the row at the paper's configuration; (None, None) where it cannot be built."""
    try:
        return count_paper_config(paper_config(spec, row))
    except Exception:  # noqa: BLE001 - a report without sizes is still a report
        return None, None


@dataclass(frozen=True)
class Claim:
    """One of the paper's size claims: a row of Table 2, or a row of another table with params / GMACs."""

    label: str
    config: PaperConfig
    params: float
    gmacs: float


def complexity_claims(tables: dict[str, dict] | None = None) -> list[Claim]:
    """Table 2's rows, then the rows of other tables it names in ``also`` (``table3.c``)."""
    tables = tables or load_paper_tables()
    spec = tables["table2"]
    claims = [Claim(f"{r['model']} (Table 2)", paper_config(spec, r), r["params"], r["gmacs"]) for r in spec["rows"]]
    for ref in spec.get("also") or []:
        table, letter = ref.split(".")
        other = tables[table]
        row = next(r for r in other["rows"] if r["row"] == letter)
        label = f"{row['model']}, {row['desc']} ({other['title'].split(':')[0]} {letter})"
        claims.append(Claim(label, paper_config(other, row), row["params"], row["gmacs"]))
    return claims


def paper_tables_markdown(tables: dict[str, dict] | None = None) -> str:
    """The paper's numbers as markdown tables, in the paper's order (docs/paper.md prints this)."""
    tables = tables or load_paper_tables()
    fields = [("row", "row"), ("model", "model"), ("desc", "setting"), ("option", "our option"), ("size", "size"),
              ("params", "params (M)"), ("gmacs", "GMACs"), ("top1", "top-1 (%)")]
    out = []
    for name in sorted((t for t in tables if has_paper(tables[t])), key=lambda t: int(t.removeprefix("table"))):
        spec = tables[name]
        extra = list((spec.get("paper_columns") or {}).items())
        cols = [(k, h) for k, h in fields if any(k in r for r in spec["rows"])] + [(k, f"{h} (%)") for k, h in extra]
        out += [f"### {spec['title']}", "", "| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(str(r.get(k, "-")) for k, _ in cols) + " |" for r in spec["rows"]]
        if spec.get("reference"):
            ref = next(r for r in spec["rows"] if r["option"] == spec["reference"])
            out.append(f"\nReference row (CvT-13 as published): {ref['row']}.")
        out.append("")
    return "\n".join(out)
