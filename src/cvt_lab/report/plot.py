"""The plot of a paper table: ours per row beside the differences from the reference row (or the paper's numbers),
read from the same rows as the markdown and the CSV (:mod:`cvt_lab.report.render`)."""

from __future__ import annotations

from pathlib import Path

from cvt_lab.report.analysis import Section
from cvt_lab.report.metrics import METRICS, Metric
from cvt_lab.report.paper import has_paper
from cvt_lab.report.rows import TableRow


def plot(spec: dict, sections: list[Section], path: Path, scale: str, metric: Metric = METRICS["test/acc1"]) -> None:
    """Per setting: ours per row (bars: mean +/- std, dots: seeds) and, beside it, the differences from the
    reference row (paper vs ours, 95% CI) or, for a table without one, the paper's numbers per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(sections), 2, figsize=(12, 4.5 * len(sections)), squeeze=False)
    for (ax1, ax2), section in zip(axes, sections):
        ran = [r for r in section.rows if r.used or not r.not_run]
        x = list(range(len(ran)))
        stats = [r.mean_std for r in ran]
        ax1.bar(x, [m or 0 for m, _ in stats], yerr=[sd or 0 for _, sd in stats], color="tab:blue", alpha=0.6,
                capsize=3)
        for i, r in enumerate(ran):
            ax1.plot([i] * len(r.values), list(r.values.values()), "k.", ms=5)
        vals = [v for r in ran for v in r.values.values()]
        if vals:
            lo, hi = min(vals), max(vals)
            ax1.set_ylim(max(0, lo - 2 * (hi - lo + 0.5)), min(100, hi + (hi - lo + 0.5)))
        ax1.set_xticks(x, [f"{r.paper['row']}: {r.ran_as}" for r in ran], rotation=30, ha="right", fontsize=8)
        ax1.set_ylabel(f"ours: {metric.label} % ({scale} scale)")
        title = "ours per row (bars: mean +/- std; dots: seeds)"
        ax1.set_title(title if len(sections) == 1 else f"{section.setting.label}\n{title}", fontsize=9)
        if section.reference is not None:
            _plot_diffs(ax2, section, scale, metric, has_paper(spec))
        else:
            _plot_paper(ax2, spec, section.rows)
    if not has_paper(spec):
        subtitle = (f"\n(ours at {scale} scale; the paper has no such table: its claims transposed, "
                    f"{metric.label}: {'higher' if metric.higher_is_better else 'lower'} is better)")
    elif scale == "paper":
        subtitle = ""
    elif spec.get("claim"):
        subtitle = (f"\n(ours at {scale} scale, on a task of its own: numbers not comparable to the paper's; "
                    "the signs of the differences test the claim)")
    else:
        subtitle = f"\n(ours at {scale} scale: a pipeline check, not comparable to the paper's numbers)"
    fig.suptitle(spec["title"] + subtitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_diffs(ax, section: Section, scale: str, metric: Metric, paper: bool) -> None:
    rows, ref = section.rows, section.reference
    x = list(range(len(rows)))
    diffs = [r.diff_ci for r in rows]
    err = [[0 if lo is None else d - lo for d, lo, _ in diffs], [0 if hi is None else hi - d for d, _, hi in diffs]]
    w = 0.38
    if paper:
        ax.bar([i - w / 2 for i in x], [r.paper_diff or 0 for r in rows], w, label="paper (ImageNet)",
               color="tab:gray")
    ax.bar([i + (w / 2 if paper else 0) for i in x], [d or 0 for d, _, _ in diffs], w, yerr=err, capsize=3,
           label=f"ours ({scale}), interval of its test", color="tab:blue")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, [f"{r.paper['row']}: {r.option}" + (f"\n{r.verdict}" if r.verdict else "") + r.vs_note(ref)
                      for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"{metric.label} difference vs row {ref.paper['row']} (points)")
    ax.set_title("difference from the reference row", fontsize=9)
    ax.legend(fontsize=8)


def _plot_paper(ax, spec: dict, rows: list[TableRow]) -> None:
    paper = [r for r in rows if r.paper.get("top1") is not None]
    cols = {"top1": "top-1", **(spec.get("paper_columns") or {})}
    w = 0.8 / len(cols)
    for k, (key, label) in enumerate(cols.items()):
        ax.bar([i - 0.4 + w * (k + 0.5) for i in range(len(paper))], [r.paper[key] for r in paper], w,
               label=f"paper {label}")
    vals = [r.paper[key] for r in paper for key in cols]
    if vals:
        ax.set_ylim(max(0, min(vals) - 5), min(100, max(vals) + 2))
    ax.set_xticks(list(range(len(paper))), [f"{r.paper['row']}: {r.option}" for r in paper], rotation=40, ha="right",
                  fontsize=8)
    ax.set_ylabel("paper top-1 %")
    ax.set_title("the paper's numbers per row", fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
