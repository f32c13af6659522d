"""Paper-table sweeps end to end through the real CLI (in subprocesses), and the pool launcher.

The miniature sweep is Table 5's experiment with two rows (CvT ``every`` and DeiT ``deit_s``), one seed,
two batches of synthetic data; the DeiT row is made to fail (``scale.deit.heads=[5]`` does not divide its
width) so one job fails while the other finishes. It runs on the pool launcher, one job at a time, each in
a process of its own; its rerun on Hydra's basic launcher, in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest
from conftest import REPO_ROOT

FAST = ["debug=tiny", "logger=csv"]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def cli(*args: str, cwd: Path, timeout: int = 240, code: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == code, f"{args} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def results(sweep: Path) -> dict[str, dict]:
    out = {}
    for path in sweep.rglob("results.json"):
        r = json.loads(path.read_text())
        row = next(o.split("=", 1)[1] for o in r["overrides"] if o.startswith("model/pos_embed="))
        out[row] = r
    return out


SWEEP = ["cvt_lab", "experiment=ablation_pos_embed", "model/pos_embed=every,deit_s", "seed=0",
         "scale.deit.heads=[5]", *FAST]


FAILED_LINE = "1 of 2 jobs failed: ["  # then the failed job's overrides, model/pos_embed=deit_s among them


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    first = cli(*SWEEP, f"paths.output_dir={out}", "launcher=cpu_parallel", "hydra.launcher.slots=1", "-m", cwd=out,
                code=1)
    sweep = out / "sweeps" / "table5_cpu"
    return out, sweep, first


def test_mini_sweep_one_failure_does_not_stop_the_other(mini):
    _, sweep, first = mini
    assert (sweep / "multirun.yaml").is_file()  # the sweep directory is stable: <table>_<scale>
    r = results(sweep)
    assert set(r) == {"every", "deit_s"}
    assert r["every"]["status"] == "finished" and r["every"]["model"] == "cvt_tiny"
    assert r["every"]["epochs"] == 1 and r["every"]["seed"] == 0
    assert r["deit_s"]["status"] == "failed"
    assert "divisible" in r["deit_s"]["error"]
    # The sweep ran every job, then failed (exit code 1) with one line naming the failed job and its error.
    summary = [line for line in first.stderr.splitlines() if "jobs failed" in line]
    assert len(summary) == 1 and summary[0].startswith("error: " + FAILED_LINE) and "divisible" in summary[0]
    assert "model/pos_embed=deit_s " in summary[0] and "model/pos_embed=every " not in summary[0]


def test_pooled_jobs_time_themselves_from_their_own_start(mini):
    """One slot: the failing job runs after the training one, in its own process; its wall time is its own
    (a failure while building the model), not the sweep's so far."""
    _, sweep, _ = mini
    r = results(sweep)
    every, deit = r["every"], r["deit_s"]
    every_start, deit_start = (datetime.fromisoformat(j["started_at"]).timestamp() for j in (every, deit))
    # Counted from the sweep's start, both jobs would share one start and the second's wall time would hold the
    # first's; counted from its own, the second starts where the first ended (give or take the clock's rounding).
    assert deit_start >= every_start + every["wall_s"] - 1.0


def test_mini_sweep_report(mini, tmp_path, capsys, monkeypatch):
    """The report's command line in-process (a subprocess adds only its start-up; test_report covers the rest)."""
    from cvt_lab.report.__main__ import main

    _, sweep, _ = mini
    monkeypatch.chdir(REPO_ROOT)
    # no pre-registration: its registered sweep would be composed to label the table, which is test_prereg's part
    assert main([str(sweep), "--out", str(tmp_path), "--prereg-dir", str(tmp_path / "no-prereg")]) == 0
    md = (tmp_path / "table5.md").read_text()
    assert (tmp_path / "table5.csv").is_file() and (tmp_path / "table5.png").stat().st_size > 0
    lines = {line.split("|")[2].strip(): line for line in md.splitlines() if line.startswith("| ") and "`" in line}
    assert "79.8" in lines["`deit_s`"] and "failed seed 0" in lines["`deit_s`"] and "divisible" in lines["`deit_s`"]
    assert "81.5" in lines["`every`"] and "ok" in lines["`every`"].split("|")[-2]
    assert "missing seeds [0]" in lines["`none`"]  # rows of the table that were not run
    assert "Failed or missing" in md and "wrote" in capsys.readouterr().out


def test_rerun_skips_finished_jobs(mini):
    out, sweep, _ = mini
    before = results(sweep)
    again = cli(*SWEEP, f"paths.output_dir={out}", "launcher=serial", "-m", cwd=out, code=1)  # Hydra's basic launcher
    after = results(sweep)
    assert "already finished" in again.stdout + again.stderr
    assert FAILED_LINE in again.stderr
    assert after["every"]["wall_s"] == before["every"]["wall_s"]  # untouched, not re-trained
    assert after["deit_s"]["status"] == "failed"  # a failed job is tried again (and fails again here)


# ------------------------------------------------------------------------------------------- the launcher


APP = '''
import json, os, sys, time
import hydra
from hydra.core.hydra_config import HydraConfig

@hydra.main(config_path=None, config_name="cfg", version_base="1.3")
def main(cfg):
    start = time.time()
    if cfg.x == {crash}:
        os._exit(3)  # the job's process dies
    time.sleep({sleep})
    out_dir = HydraConfig.get().runtime.output_dir
    together = None
    if cfg.x in cfg.together:  # wait until every job of `together` runs: they were launched at once
        arrived = os.path.join(HydraConfig.get().sweep.dir, "arrived")
        os.makedirs(arrived, exist_ok=True)
        open(os.path.join(arrived, str(cfg.x)), "w").close()
        deadline = time.time() + 60
        while len(os.listdir(arrived)) < len(cfg.together) and time.time() < deadline:
            time.sleep(0.05)
        together = len(os.listdir(arrived))
    if cfg.peak and HydraConfig.get().job.num == 0:  # what a cvt_lab job records after using a GPU: only the first
        # job's record is read (jobs_per_gpu=auto measures it), and importing cvt_lab costs a job seconds
        from cvt_lab.results import RunRecord, write_record
        write_record(out_dir, RunRecord(status="finished", peak_gpu_mem_bytes=cfg.peak))
    out = {{"x": cfg.x, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time(),
            "threads": os.environ.get("OMP_NUM_THREADS"), "pid": os.getpid(), "together": together}}
    open(os.path.join(out_dir, "job.json"), "w").write(json.dumps(out))
    return out

if __name__ == "__main__":
    from hydra.core.config_store import ConfigStore
    ConfigStore.instance().store(name="cfg", node={{"x": 0, "together": [], "peak": 0}})
    main()
'''


def run_app(tmp_path: Path, *args: str, crash: int = -1, sleep: float = 0.75, code: int = 0,
            output: list | None = None, **environ: str) -> list[dict]:
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(APP.format(crash=crash, sleep=sleep)))
    environment = {k: v for k, v in env().items() if k != "CUDA_VISIBLE_DEVICES"}  # the fake GPUs are all there is
    proc = subprocess.run([sys.executable, str(app), "-m", "hydra/launcher=cvt_lab_pool",
                           f"hydra.sweep.dir={tmp_path}/sweep", *args], cwd=tmp_path, env={**environment, **environ},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == code, proc.stdout[-2000:] + proc.stderr[-2000:]
    if output is not None:  # the launcher's log (stdout) and errors (stderr)
        output.append(proc.stdout + proc.stderr)
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").rglob("job.json"))]


def overlapping(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def test_gpu_launcher_pins_distinct_devices_and_queues(tmp_path):
    jobs = run_app(tmp_path, "hydra.launcher.pin_gpus=true", "hydra.launcher.num_gpus=2", "x=1,2,3,4,5")
    assert sorted(j["x"] for j in jobs) == [1, 2, 3, 4, 5]
    assert {j["cuda"] for j in jobs} <= {"0", "1"}
    assert len({j["pid"] for j in jobs}) == 5  # a fresh process per job
    for a in jobs:
        concurrent = [b for b in jobs if b is not a and overlapping(a, b)]
        assert all(b["cuda"] != a["cuda"] for b in concurrent), (a, concurrent)
        running_at_start = [b for b in jobs if b["start"] <= a["start"] < b["end"]]
        assert len(running_at_start) <= 2  # two devices: never more than two jobs at once
    assert any(overlapping(a, b) for a in jobs for b in jobs if a is not b)  # and they do run in parallel


def test_gpu_launcher_groups_devices_per_job(tmp_path):
    jobs = run_app(tmp_path, "hydra.launcher.pin_gpus=true", "hydra.launcher.devices=[0,1,2,3]",
                   "hydra.launcher.gpus_per_job=2", "x=1,2,3", sleep=0.5)
    assert {j["cuda"] for j in jobs} <= {"0,1", "2,3"}


def test_cpu_pool_threads_and_a_crashed_job(tmp_path):
    """A job whose process dies is failed for Hydra too: the sweep goes on, then exits 1 naming it."""
    output: list[str] = []
    jobs = run_app(tmp_path, "hydra/sweeper=cvt_lab", "hydra.launcher.pin_gpus=false", "hydra.launcher.slots=2",
                   "hydra.launcher.threads_per_job=1", "x=1,2,3", crash=2, sleep=0.5, code=1, output=output)
    assert sorted(j["x"] for j in jobs) == [1, 3]  # the crash did not stop the sweep
    assert all(j["threads"] == "1" for j in jobs)
    failed = [json.loads(p.read_text()) for p in (tmp_path / "sweep").rglob("results.json")]
    assert len(failed) == 1 and failed[0]["status"] == "failed" and "exited with code 3" in failed[0]["error"]
    expected = "1 of 3 jobs failed: [x=2] job process exited with code 3"
    assert expected in output[0] and "Traceback" not in output[0]


def test_packed_gpus_run_jobs_together_with_their_share_of_the_cores(tmp_path):
    """jobs_per_gpu=2 on 2 (fake) GPUs: 4 jobs at once, two per GPU, each with 8 cores / 4 jobs = 2 threads; the
    slots index the launcher's own visible devices (CUDA_VISIBLE_DEVICES=5,7 here: GPUs 5 and 7)."""
    jobs = run_app(tmp_path, "hydra.launcher.pin_gpus=true", "hydra.launcher.num_gpus=2",
                   "hydra.launcher.jobs_per_gpu=2", "hydra.launcher.cpu_cores=8", "x=1,2,3,4", "together=[1,2,3,4]",
                   sleep=0, CUDA_VISIBLE_DEVICES="5,7")
    assert sorted(j["x"] for j in jobs) == [1, 2, 3, 4]
    assert all(j["together"] == 4 for j in jobs)  # all four were running at once
    assert sorted(j["cuda"] for j in jobs) == ["5", "5", "7", "7"]
    assert all(j["threads"] == "2" for j in jobs)


def test_packed_gpus_auto_measures_the_first_job(tmp_path):
    """jobs_per_gpu=auto: the first job runs alone; it peaked at 2 GiB (+ its CUDA context), so 2 fit a GPU of
    8 GiB with 15% to spare: the next jobs run two at once, with 8 cores / 2 jobs = 4 threads each."""
    output: list[str] = []
    jobs = run_app(tmp_path, "hydra.launcher.pin_gpus=true", "hydra.launcher.num_gpus=1",
                   "hydra.launcher.jobs_per_gpu=auto", f"hydra.launcher.gpu_memory_bytes={8 * 2**30}",
                   "hydra.launcher.cpu_cores=8", f"peak={2 * 2**30}", "x=1,2", sleep=0, output=output)
    first, second = sorted(jobs, key=lambda j: j["x"])
    assert first["end"] <= second["start"] and first["threads"] == "8"  # alone, with every core
    assert second["threads"] == "4"  # sized for two at once
    assert "2 fit a GPU of 8.0 GiB with 15% to spare; 2 per GPU" in output[0]
