"""The run directory (cvt_lab.rundir.RunDir): its layout, the lock, a killed run's stale record, checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile

import pytest

from cvt_lab.results import RunRecord, read_record
from cvt_lab.rundir import KILLED, RunDir, checkpoint_file


def fake_checkpoint(path, mtime: float):
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data.pkl", b"x")
    os.utime(path, (mtime, mtime))
    return path


def test_the_layout_is_named_in_one_place(tmp_path):
    run = RunDir(tmp_path)
    assert run.results_file == tmp_path / "results.json" and run.lock_file == tmp_path / ".lock"
    assert run.config_file == tmp_path / ".hydra" / "config.yaml"
    assert run.last_checkpoint == tmp_path / "checkpoints" / "last.ckpt"
    assert checkpoint_file(tmp_path) == tmp_path  # no last.ckpt yet: the path as given
    fake_checkpoint(run.last_checkpoint, 100)
    assert checkpoint_file(tmp_path) == run.last_checkpoint  # a run directory stands for its last checkpoint


def test_a_killed_runs_record_reads_as_failed_not_running_forever(tmp_path):
    """A record that says "running" while no process holds the lock: the run was killed (SIGKILL, out of memory,
    the machine went down) before it could record its end."""
    run = RunDir(tmp_path)
    with run.lock():
        run.write_record(RunRecord(status="running", seed=0))
        assert run.is_locked() and run.record().status == "running"  # its owner is alive
    stale = run.record()
    assert stale.status == "failed" and stale.error == KILLED
    assert read_record(tmp_path).status == "running"  # the file is left as it is, for the rerun to resume


def test_a_lock_held_by_another_process_is_seen(tmp_path):
    # the lock as RunDir.lock takes it (flock on .lock), in a process that needs no cvt_lab to hold it
    code = ("import fcntl, os, sys, time\n"
            "fd = os.open(os.path.join(sys.argv[1], '.lock'), os.O_RDWR | os.O_CREAT, 0o644)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        RunDir(tmp_path).write_record(RunRecord(status="running"))
        assert RunDir(tmp_path).is_locked() and RunDir(tmp_path).record().status == "running"
    finally:
        proc.kill()
        proc.wait()
    deadline = time.time() + 10
    while RunDir(tmp_path).is_locked() and time.time() < deadline:
        time.sleep(0.05)
    assert RunDir(tmp_path).record().status == "failed"  # its owner died: the lock went with it


def test_old_requeue_checkpoints_do_not_pile_up(tmp_path):
    run = RunDir(tmp_path)
    old = [fake_checkpoint(tmp_path / f"hpc_ckpt_{n}.ckpt", 100 + n) for n in (1, 2)]
    newest = fake_checkpoint(tmp_path / "hpc_ckpt_3.ckpt", 200)
    fake_checkpoint(run.last_checkpoint, 150)
    assert run.newest_readable_checkpoint() == newest
    assert sorted(run.prune_hpc_checkpoints(keep=newest)) == old
    assert sorted(p.name for p in tmp_path.glob("hpc_ckpt_*")) == ["hpc_ckpt_3.ckpt"]
    assert run.last_checkpoint.is_file()  # the run's own checkpoints stay
    run.prune_hpc_checkpoints(keep=run.last_checkpoint)  # resumed from last.ckpt: none is needed
    assert not list(tmp_path.glob("hpc_ckpt_*"))


def test_a_resumed_run_prunes_the_requeue_checkpoints_it_did_not_resume_from(tmp_path, tiny_run):
    """The job prunes them once it owns the directory (the newest readable is what it resumes from)."""
    import shutil

    from conftest import TINY, compose_config

    from cvt_lab.job import run

    target = tmp_path / "run"
    shutil.copytree(tiny_run, target)
    record = read_record(target)
    record.status = "failed"
    RunDir(target).write_record(record)
    stale = fake_checkpoint(target / "hpc_ckpt_1.ckpt", 1)  # older than every checkpoint of the run
    assert run(compose_config(*TINY), target).status == "finished"
    assert not stale.exists()


@pytest.mark.parametrize("status", ["finished", None])
def test_mark_failed_keeps_a_finished_record(tmp_path, status):
    run = RunDir(tmp_path)
    if status:
        run.write_record(RunRecord(status=status))
    written = run.mark_failed("killed", ["seed=1"])
    assert (written is None) == (status == "finished")
    assert read_record(tmp_path).status == (status or "failed")


def test_a_finished_run_leaves_each_images_outcome_beside_its_record(tiny_run):
    """outcomes.npz: the test and validation images' top-1 correctness, in loader order (the report's test-set
    noise); written by the job, in the run directory's layout."""
    outcomes = RunDir(tiny_run).read_outcomes()
    record = read_record(tiny_run)
    assert set(outcomes) == {"val", "test"} and outcomes["test"].dtype == bool and len(outcomes["test"]) > 0
    assert outcomes["test"].mean() == pytest.approx(record.test_acc1, abs=1e-6)
