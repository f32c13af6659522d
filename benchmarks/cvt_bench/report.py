"""The report: the issue's targets checked against the measured figures, and the printed table."""

from __future__ import annotations

import math
from typing import Any

from .harness import ratio
from .models import COMPILED

# GPU (issue 9): ours over transformers' CvT, bf16, CvT-13, batch 128 (inference: batch 256).
GPU_TARGETS = {"train_vs_theirs": 2.0, "train_vs_theirs_compiled": 1.5, "infer_vs_theirs": 2.5}


def check_targets(report: dict) -> list[dict]:
    out = []

    def add(name: str, value: float | None, target: float, higher: bool = True, note: str = "",
            ceiling: float | None = None) -> None:
        met = None if value is None else (value >= target if higher else value <= target)
        row = {"target": name, "value": value, "threshold": target, "met": met}
        if ceiling is not None:
            row.update(ceiling=ceiling, reachable=ceiling >= target)
        out.append({**row, **({"note": note} if note else {})})

    if report["meta"].get("device") == "cuda":
        gpu_targets(report, add)
    else:
        cpu_targets(report, add)
    mem = report.get("memory", {})
    if "ratio" in mem:
        add(f"peak training memory at batch {mem['batch']}, ours / theirs <= 1", mem["ratio"]["peak_mib"], 1.0,
            higher=False)
    acc = report.get("digits_accuracy", {})
    if "bf16_minus_fp32_points" in acc:
        add("default digits run, bf16 test top-1 - fp32 test top-1 >= -1 point", acc["bf16_minus_fp32_points"], -1.0)
    if "numerics" in report:
        add("fp32 logits, max |optimized - plain| <= 1e-4", report["numerics"]["max_abs_diff_fp32"], 1e-4,
            higher=False)
    return out


def cpu_targets(report: dict, add) -> None:
    """ours / theirs in fp32, ours bf16 / theirs fp32; each with its ceiling: the speed-up over theirs (fp32)
    that ours would have if every counted FLOP ran at the matmul peak measured in this run, which no
    implementation of the same model can beat on this machine."""
    tp, peak = report.get("throughput", {}), report.get("matmul_peak_gflops", {})

    def ceiling(precision: str, mode: str) -> float | None:
        return ratio(peak.get(precision), tp.get("fp32", {}).get("theirs", {}).get(mode, {}).get("gflops"))

    if "fp32" in tp:
        for mode, label in (("train", "training"), ("infer", "inference")):
            add(f"fp32 {label} throughput, ours / theirs >= 1.4", tp["fp32"]["ratio"][mode]["images_per_s"], 1.4,
                ceiling=ceiling("fp32", mode))
    if "bf16" in tp and "fp32" in tp:
        for mode, label, target in (("train", "training", 2.5), ("infer", "inference", 3.0)):
            add(f"bf16 {label} throughput, ours / theirs fp32 >= {target:g}",
                tp["bf16"]["ratio_vs_theirs_fp32"][mode], target, ceiling=ceiling("bf16", mode))


def best_vs(res: dict, mode: str, theirs: str) -> tuple[float | None, str]:
    """Our faster form (eager or compiled) over ``theirs`` in ``mode``, and which form that is."""
    if mode in res.get(f"ratio_best_vs_{theirs}", {}):
        return res[f"ratio_best_vs_{theirs}"][mode], res["best_ours"][mode]
    return (res["ratio"][mode]["images_per_s"], "ours") if theirs == "theirs" else (None, "")


def gpu_targets(report: dict, add) -> None:
    """Issue 9's GPU targets, each at every measured size: ours (the faster of eager and compiled) over
    transformers' eager and compiled CvT in bf16."""
    size = report["config"]["image_size"]
    by_size = {int(s): r for s, r in report.get("throughput_by_size", {}).items()}
    blocks = {size: report.get("throughput", {}), **by_size}
    for px, tp in blocks.items():
        if "bf16" not in tp:
            continue
        batch = report["config"]["batch"]
        for theirs, key in (("theirs", "train_vs_theirs"), ("theirs" + COMPILED, "train_vs_theirs_compiled")):
            value, form = best_vs(tp["bf16"], "train", theirs)
            if value is not None:
                label = "transformers eager" if theirs == "theirs" else "transformers compiled"
                add(f"bf16 training at {px}px, batch {batch}, ours / {label} >= {GPU_TARGETS[key]:g}", value,
                    GPU_TARGETS[key], note=f"ours: {form}")
    inf = report.get("inference_batch")
    if inf:
        value, form = best_vs(inf["results"], "infer", "theirs")
        add(f"bf16 inference at {inf['image_size']}px, batch {inf['batch']}, ours / transformers eager >= "
            f"{GPU_TARGETS['infer_vs_theirs']:g}", value, GPU_TARGETS["infer_vs_theirs"], note=f"ours: {form}")


# ------------------------------------------------------------------------------------------------- table


def fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _names(res: dict) -> list[str]:
    return [n for n in ("ours", "theirs", "ours" + COMPILED, "theirs" + COMPILED) if n in res]


def throughput_lines(label: str, res: dict) -> list[str]:
    """Images/s and GFLOP/s (MFU) of every model in ``res`` with ours / theirs; with compiled twins a line of
    their ratios."""
    names, lines = _names(res), []
    for mode in ("train", "infer"):
        if not res["ours"].get(mode):
            continue
        r = res["ratio"][mode]
        lines.append(f"{label + ' ' + mode + ' images/s':<34}" + "".join(f"{fmt(res[n][mode]['images_per_s']):>16}"
                                                                       for n in names)
                     + f"{fmt(r['images_per_s']):>13}")
        lines.append(f"{label + ' ' + mode + ' GFLOP/s (MFU)':<34}" + "".join(
            f"{fmt(res[n][mode]['gflops'], '.1f') + ' (' + fmt(100 * (res[n][mode]['mfu'] or 0), '.0f') + '%)':>16}"
            for n in names) + f"{fmt(r['gflops']):>13}")
        if mode in res.get("best_ours", {}):
            lines.append(f"{'':<34}compiled / compiled "
                         f"{fmt(res['ratio_compiled'].get(mode, {}).get('images_per_s'))}; best ours "
                         f"({res['best_ours'][mode]}) / theirs {fmt(res.get('ratio_best_vs_theirs', {}).get(mode))}, "
                         f"/ theirs compiled {fmt(res.get('ratio_best_vs_theirs' + COMPILED, {}).get(mode))}")
    for mode, v in res.get("ratio_vs_theirs_fp32", {}).items():
        lines.append(f"{label + ' ' + mode + ' vs theirs fp32':<34}{'':>{16 * len(names)}}{fmt(v):>13}")
    return lines


def table(report: dict) -> str:
    lines = []
    m, cfg = report["meta"], report["config"]
    lines.append(f"cvt_bench: {cfg['model']} vs transformers CvtForImageClassification | {m['device_name']} | "
                 f"torch {m['torch']} | {m['threads']} threads | batch {cfg['batch']} | {cfg['image_size']}px | "
                 f"malloc {m['malloc']} | load {m['load_average_start']}")
    feats = m.get("cpu_features") or {}
    if m.get("device") == "cpu" and feats:
        lines.append("bf16 matrix instructions: " + (", ".join(f for f in ("amx_bf16", "avx512_bf16") if feats.get(f))
                                                      or "none (bf16 runs through fp32 units)"))
    peak = report.get("matmul_peak_gflops", {})
    lines.append("matmul peak: " + ", ".join(f"{p} {fmt(v, '.1f')} GFLOP/s" for p, v in peak.items()))
    tp = report.get("throughput", {})
    if tp:
        lines.append("")
        lines.append(f"{'figure':<34}" + "".join(f"{n:>16}" for n in _names(next(iter(tp.values()))))
                     + f"{'ours/theirs':>13}")
        for p, r in tp.items():
            lines += throughput_lines(p, r)
    for size, block in report.get("throughput_by_size", {}).items():
        for p, r in block.items():
            lines += throughput_lines(f"{p} {size}px", r)
    inf = report.get("inference_batch")
    if inf:
        lines += throughput_lines(f"{inf['precision']} b{inf['batch']}", inf["results"])
    lines += steady_lines(report)
    lines += memory_lines(report.get("memory"))
    lines += resolution_lines(report.get("resolution"))
    lines += lever_lines(report)
    num = report.get("numerics")
    if num:
        lines += ["", f"numerics: fp32 max |optimized - plain| = {num['max_abs_diff_fp32']:.2e} (<= 1e-4: {num['ok']})"]
    lines += loop_lines(report)
    lines += loader_lines(report)
    if report.get("targets"):
        lines += ["", "targets:"]
        for t in report["targets"]:
            flag = {True: "MET", False: "not met", None: "-"}[t["met"]]
            bound = (f"  (ceiling at the measured matmul peak: {fmt(t['ceiling'])}"
                     f"{'' if t['reachable'] else ', out of reach on this machine'})") if "ceiling" in t else ""
            note = f"  [{t['note']}]" if t.get("note") else ""
            lines.append(f"  [{flag:>7}] {t['target']}: {fmt(t['value'], '.3g')}{bound}{note}")
    return "\n".join(lines)


def steady_lines(report: dict) -> list[str]:
    st = report.get("throughput_steady")
    if not st:
        return []
    parts = []
    for p in ("fp32", "bf16"):
        if p in st:
            parts.append(f"{p} train {fmt(st[p]['ratio']['train']['images_per_s'])}, infer "
                         f"{fmt(st[p]['ratio']['infer']['images_per_s'])}")
        if p == "bf16" and "ratio_vs_theirs_fp32" in st.get(p, {}):
            r = st[p]["ratio_vs_theirs_fp32"]
            parts.append(f"bf16 vs theirs fp32 train {fmt(r['train'])}, infer {fmt(r['infer'])}")
    return [f"steady cross-check ({st['threads']} thread, {st['clock']} clock), ours/theirs: " + "; ".join(parts)]


def memory_lines(mem: dict | None) -> list[str]:
    if not mem or "ours" not in mem:
        return []
    names = _names(mem)
    lines = [f"{'peak train memory MiB (b' + str(mem['batch']) + ')':<34}"
             + "".join(f"{fmt(mem[n]['peak_mib'], '.0f'):>16}" for n in names) + f"{fmt(mem['ratio']['peak_mib']):>13}"]
    if "peak_rss_growth_mib" in mem["ours"] and "peak_rss_growth_mib" in mem["theirs"]:
        lines.append(f"{'  peak RSS growth MiB':<34}{fmt(mem['ours']['peak_rss_growth_mib'], '.0f'):>16}"
                     f"{fmt(mem['theirs']['peak_rss_growth_mib'], '.0f'):>16}"
                     f"{fmt(mem['ratio'].get('peak_rss_growth_mib')):>13}")
    return lines


def resolution_lines(res: dict | None) -> list[str]:
    if not res:
        return []
    lines = ["", f"time per image ({res['precision']}, batch {res['batch']}), ms: train / infer;  MACs growth"]
    for s in map(str, res["sizes"]):
        o, t, r = res["ours"][s], res["theirs"][s], res["ratio"][s]
        lines.append(f"  {s:>4}px  ours {fmt(o['train']['ms_per_image'], '.1f')} / "
                     f"{fmt(o['infer']['ms_per_image'], '.1f')}"
                     f"   theirs {fmt(t['train']['ms_per_image'], '.1f')} / {fmt(t['infer']['ms_per_image'], '.1f')}"
                     f"   ratio {fmt(r['train']['ms_per_image'])} / {fmt(r['infer']['ms_per_image'])}"
                     f"   MACs x{fmt(res['growth_vs_smallest']['macs'][s])}")
    return lines


def lever_lines(report: dict) -> list[str]:
    lev = report.get("levers", {})
    if not lev:
        return []
    cfg = report.get("levers_config", {})
    lines = ["", f"levers (ours, {cfg.get('threads', '?')} thread(s), {cfg.get('clock', '?')} clock; "
                 f"speed-up of having the lever on):"]
    for k, v in lev.items():
        if isinstance(v, dict) and "lever" in v:
            lines.append(f"  {k:<34} {fmt(v['ms_per_step_off'], '.0f'):>8} -> {fmt(v['ms_per_step_on'], '.0f'):>6} ms"
                         f"  x{fmt(v['speedup'])}")
        elif isinstance(v, dict) and "note" in v and "speedup" not in v:
            lines.append(f"  {k:<34} {v['note']}")
    alloc = lev.get("malloc")
    if alloc and "speedup" in alloc:
        for n in ("ours", "theirs"):
            lines.append(f"  {'malloc ' + alloc['malloc'] + ' (' + n + ', fp32)':<34} train x"
                         f"{fmt(alloc['speedup'][n]['train'])}  infer x{fmt(alloc['speedup'][n]['infer'])}")
    for p, comp in lev.get("compile", {}).items():
        if isinstance(comp, dict) and "train" in comp:
            lines.append(f"  torch.compile (ours, {p}){'':<9} train x{fmt(comp['train']['speedup'])} (compile "
                         f"{fmt(comp['train_compile_s'], '.0f')} s), infer x{fmt(comp['infer']['speedup'])}")
    return lines


def loop_lines(report: dict) -> list[str]:
    lines = []
    tl = report.get("training_loop")
    if tl:
        lines.append("")
        if tl.get("available"):
            lines.append(f"training loop ({' '.join(tl['overrides'])}): start-up {fmt(tl['startup_s'], '.1f')} s, "
                         f"data wait {fmt(100 * (tl['data_wait_fraction'] or 0), '.1f')}% of the loop, "
                         f"{tl['steps']} steps at {fmt(tl['ms_per_step'], '.0f')} ms")
            fr = tl.get("fraction_of_wall")
            if fr:
                shares = ", ".join(f"{k} {fmt(100 * (v or 0), '.0f')}%" for k, v in fr.items())
                lines.append("  share of wall time: " + shares)
        else:
            lines.append(f"training loop: skipped ({tl.get('note')})")
    acc = report.get("digits_accuracy")
    if acc and "test_acc1" in acc:
        lines.append(f"default digits run: test top-1 fp32 {100 * acc['test_acc1']['fp32']:.2f}%, bf16 "
                     f"{100 * acc['test_acc1']['bf16']:.2f}%; bf16 step x{fmt(acc['step_speedup_bf16'])} faster")
        full = acc.get("runs", {}).get("fp32", {})
        if full.get("fraction_of_wall"):  # the whole run, where start-up is amortized as in real use
            lines.append(f"  fp32 run: {fmt(full['wall_s'], '.1f')} s wall, "
                         f"start-up {fmt(full['startup_s'], '.1f')} s, "
                         f"data wait {fmt(100 * (full['data_wait_fraction'] or 0), '.1f')}% of the loop; share of "
                         "wall time: " + ", ".join(f"{k} {fmt(100 * (v or 0), '.0f')}%"
                                                   for k, v in full["fraction_of_wall"].items()))
    return lines


def loader_lines(report: dict) -> list[str]:
    """The input pipeline (``--data``, :func:`benchmarks.cvt_bench.loader.bench_loader`) beside the model's
    training images/s in this run."""
    ld = report.get("loader")
    if not ld:
        return []
    if "loader" not in ld:
        return ["", f"loader: skipped ({ld.get('note')})"]
    lines = ["", f"loader ({ld['root']}: {ld.get('train_images', '?')} training images, batch {ld['batch_size']}, "
                 f"{ld['image_size']}px), images/s in total / per worker:"]
    for pipeline, by_workers in ld["loader"].items():
        lines.append(f"  {pipeline:<6} " + ", ".join(f"{w} worker(s) {fmt(r['images_per_s'], '.0f')} / "
                                                     f"{fmt(r['per_worker'], '.0f')}" for w, r in by_workers.items()))
    model = ld.get("model_train_images_per_s")
    if model:
        lines.append("  model training images/s (ours, this run): "
                     + ", ".join(f"{p} {fmt(v, '.0f')}" for p, v in model.items()))
    return lines
