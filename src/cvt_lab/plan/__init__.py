"""A sweep's plan before its bill: ``python -m cvt_lab.plan experiment=... [scale=paper] [overrides] [--measure]``.

It lists the jobs ``python -m cvt_lab ... -m`` would launch (composed by Hydra's config loader and cvt_lab's
sweeper, each with the directory the sweep gives it), marks those whose directory holds the finished run of
the same identity (the sweep skips them), and estimates each job's time from its model's speed (a short measured
step with ``--measure``, else a benchmark's recorded throughput scaled by multiply-adds), its data's size and
its epochs; then the device-hours of the jobs to run and the sweep's wall time with the launcher's parallelism
on the devices this machine sees (``hydra.launcher.num_gpus=N`` plans for N GPUs).

API::

    make_plan(overrides, measure=False, steps=3, benchmarks=None) -> dict   # what --json writes
    render(plan) -> str                                                     # the table printed
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cvt_lab.plan.estimate import (
    DataSize,
    Speed,
    benchmark_speed,
    data_size,
    device_of,
    image_size_of,
    macs_of,
    measure_speed,
    read_benchmarks,
    seconds,
    sweep_wall,
    work_of,
)
from cvt_lab.plan.jobs import FINISHED, NEW, RESUME, TAKEN, Job, Sweep, compose_sweep

__all__ = ["default_benchmarks", "make_plan", "render"]


def default_benchmarks() -> list[Path]:
    """The repository's recorded benchmarks (``experiments/bench/**/*.json``, beside ``conf/``: the GPU's are in
    ``gpu/``)."""
    from cvt_lab.paths import config_dir

    return sorted((config_dir().parent / "experiments" / "bench").rglob("*.json"))


def launcher_slots(config: DictConfig, visible_gpus: int) -> tuple[int, str]:
    """How many jobs the sweep's launcher runs at once here, and how it says so."""
    launcher = config.hydra.launcher
    target = str(launcher.get("_target_", ""))
    if target.endswith("PoolLauncher"):
        from cvt_lab.sweep import available_cores, jobs_per_slot, make_slots, parse_jobs_per_gpu

        num_gpus = visible_gpus if launcher.num_gpus is None else launcher.num_gpus
        try:
            groups = make_slots(launcher.pin_gpus, num_gpus, launcher.devices, launcher.gpus_per_job, launcher.slots)
        except ValueError:
            return 1, "launcher=gpus, no GPU visible here: planned on one (hydra.launcher.num_gpus=N plans for N)"
        if not launcher.pin_gpus:
            return len(groups), f"launcher: {len(groups)} CPU slots"
        per_gpu = parse_jobs_per_gpu(launcher.jobs_per_gpu)
        per = jobs_per_slot(per_gpu or 1, len(groups), launcher.cpu_cores or available_cores())
        auto = " (jobs_per_gpu=auto: set when the first job has run; planned as 1)" if per_gpu is None else ""
        return len(groups) * per, f"launcher: {len(groups)} GPU slot(s) x {per} job(s) per GPU{auto}"
    if "submitit" in target:
        n = int(launcher.get("array_parallelism") or 1)
        return n, f"launcher=slurm: up to {n} jobs at once (array_parallelism), as the queue grants"
    return 1, "launcher=serial: one job after another"


def make_plan(overrides: Sequence[str], measure: bool = False, steps: int = 3,
              benchmarks: Sequence[Path] | None = None) -> dict[str, Any]:
    """The plan of ``python -m cvt_lab OVERRIDES -m`` (see the module docstring), as a JSON-ready dict."""
    import torch

    sweep: Sweep = compose_sweep(overrides)
    visible = torch.cuda.device_count()
    recorded = read_benchmarks(default_benchmarks() if benchmarks is None else benchmarks)
    speeds: dict[str, Speed | None] = {}
    sizes: dict[str, DataSize] = {}
    rows = []
    for job in sweep.jobs:
        cfg = job.config
        device = device_of(cfg, visible)
        data_key = OmegaConf.to_yaml(cfg.data)
        size = sizes[data_key] = sizes.get(data_key) or data_size(cfg)
        work = work_of(cfg, size, device)
        speed = None
        if job.status in (NEW, RESUME):
            key = OmegaConf.to_yaml({"model": cfg.model, "size": image_size_of(cfg), "batch": cfg.recipe.batch_size,
                                     "device": device.kind, "precision": device.precision})
            if key not in speeds:
                speeds[key] = (measure_speed(cfg, device, steps) if measure
                               else benchmark_speed(recorded, device, macs_of(cfg)))
            speed = speeds[key]
        rows.append(_row(sweep, job, device, work, speed))
    return {"command": "python -m cvt_lab " + " ".join(overrides) + " -m", "sweep_dir": str(sweep.sweep_dir),
            "jobs": rows, "summary": _summary(sweep.config, rows, visible),
            "data": sorted({f"{d.source} ({d.train} train, {d.val} val, {d.test} test)" for d in sizes.values()}),
            "speed": sorted({s.source for s in speeds.values() if s is not None})}


def _row(sweep: Sweep, job: Job, device, work, speed: Speed | None) -> dict[str, Any]:
    cfg = job.config
    runs = job.status in (NEW, RESUME)
    return {
        "index": job.index, "status": job.status, "overrides": job.overrides, "job_dir": str(job.job_dir),
        "job": str(job.job_dir.relative_to(sweep.sweep_dir)), "identity": job.identity,
        "model": cfg.model.name, "data": cfg.data.name, "epochs": work.epochs, "steps": work.steps,
        "image_size": image_size_of(cfg), "batch_size": int(cfg.recipe.batch_size), "precision": device.precision,
        "device": device.kind, "devices": device.count, "train_images": work.train_images,
        "eval_images": work.eval_images, "seconds": round(seconds(work, speed), 1) if runs and speed else None,
        "note": job.note or (None if speed or not runs else
                             f"no throughput known for {device.precision} on {device.kind}: --measure on that device, "
                             f"or record a benchmark (python -m benchmarks.cvt_bench --device {device.kind})"),
    }


def _summary(config: DictConfig, rows: list[dict[str, Any]], visible: int) -> dict[str, Any]:
    to_run = [r for r in rows if r["status"] in (NEW, RESUME)]
    known = all(r["seconds"] is not None for r in to_run)
    slots, parallel = launcher_slots(config, visible)
    job_s = [r["seconds"] for r in to_run] if known else []
    kind = to_run[0]["device"] if to_run else "cpu"
    return {
        "jobs": len(rows), "to_run": len(to_run), "finished": sum(r["status"] == FINISHED for r in rows),
        "taken": sum(r["status"] == TAKEN for r in rows), "device": kind, "visible_gpus": visible,
        "job_seconds": round(sum(job_s), 1) if known else None,
        "device_hours": round(sum(r["seconds"] * r["devices"] for r in to_run) / 3600, 3) if known else None,
        "slots": slots, "parallelism": parallel,
        "wall_seconds": round(sweep_wall(job_s, slots), 1) if known else None,
    }


def duration(s: float | None) -> str:
    if s is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.1f} {unit}"
    return f"{s:.0f} s"


def render(plan: dict[str, Any]) -> str:
    """The plan as a table and a few lines of totals and sources."""
    head = ("#", "status", "job", "model", "data", "epochs", "px", "batch", "precision", "time")
    body = [(str(r["index"]), r["status"], r["job"], r["model"], r["data"], str(r["epochs"]), str(r["image_size"]),
             str(r["batch_size"]), r["precision"], duration(r["seconds"]) if r["status"] != FINISHED else "skip")
            for r in plan["jobs"]]
    widths = [max(len(row[i]) for row in (head, *body)) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in (head, *body)]
    s = plan["summary"]
    hours = "GPU-hours" if s["device"] == "cuda" else "CPU-hours"
    taken = f", {s['taken']} refused: their directories hold another config's run" if s["taken"] else ""
    device_hours = "?" if s["device_hours"] is None else s["device_hours"]
    wall = f"{duration(s['wall_seconds'])} wall"
    counts = f"{s['jobs']} jobs: {s['to_run']} to run, {s['finished']} finished{taken}"
    lines += ["", f"sweep: {plan['sweep_dir']} ({counts})",
              f"time: {duration(s['job_seconds'])} of jobs, {device_hours} {hours}; {s['parallelism']}: {wall}",
              *(f"data: {d}" for d in plan["data"]), *(f"speed: {x}" for x in plan["speed"]),
              "(training and evaluation only: start-up and checkpointing not counted)"]
    lines += [f"note #{r['index']}: {r['note']}" for r in plan["jobs"] if r["note"]]
    return "\n".join(lines)
