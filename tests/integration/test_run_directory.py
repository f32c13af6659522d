"""What a run does with its directory (cvt_lab.job.run, in-process): a rerun with another config is refused, an
unfinished one resumes, eval never replaces a training record, a truncated checkpoint falls back (and stale requeue
checkpoints are pruned), a second owner is refused, a failure is recorded, each image's outcome is kept; and a lock
held by another process is seen. The record and RunDir alone are tests/unit/test_results.py and test_rundir.py."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time

import pytest
from conftest import TINY, compose_config, fake_checkpoint

from cvt_lab.results import RESULTS_FILE, RunDirBusy, RunRecord, read_record, run_lock, write_record
from cvt_lab.errors import JobError, RunDirTaken
from cvt_lab.job import run
from cvt_lab.rundir import RunDir


@pytest.fixture
def finished(tiny_run):
    """A finished tiny run (the session's, conftest.tiny_run): its directory, not to be modified."""
    assert read_record(tiny_run).status == "finished" and read_record(tiny_run).identity
    return tiny_run


@pytest.fixture
def copy_of(finished, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(finished, target)
    return target


def test_rerun_with_another_config_is_refused_and_changes_nothing(copy_of):
    before = (copy_of / RESULTS_FILE).read_bytes()
    started = []
    with pytest.raises(RunDirTaken) as refused:
        run(compose_config(*TINY, "model.dims=[16,32,64]"), copy_of, on_start=lambda: started.append(1))
    message = str(refused.value)
    assert "model.dims: [32, 64, 128] -> [16, 32, 64]" in message
    assert "new directory" in message and "resume=" in message and "\n" not in message
    assert (copy_of / RESULTS_FILE).read_bytes() == before and not started  # nor the config snapshot

    again = run(compose_config(*TINY), copy_of, on_start=lambda: started.append(1))  # the same config: skipped
    assert again == read_record(copy_of) and not started


def test_unfinished_run_with_another_lr_is_refused_unless_resumed_on_purpose(copy_of):
    record = read_record(copy_of)
    record.status = "failed"  # e.g. the NaN stop: its checkpoints stay
    write_record(copy_of, record)
    with pytest.raises(RunDirTaken, match=r"recipe.optimizer.lr: 0.002 -> 0.0001"):
        run(compose_config(*TINY, "recipe.optimizer.lr=1e-4"), copy_of)
    resumed = run(compose_config(*TINY, "recipe.optimizer.lr=1e-4", f"resume={copy_of}/checkpoints/last.ckpt"),
                  copy_of)
    assert resumed.status == "finished" and resumed.identity_config["recipe.optimizer.lr"] == 1e-4


def test_eval_never_replaces_a_training_record(copy_of, tmp_path):
    before = (copy_of / RESULTS_FILE).read_bytes()
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RunDirTaken, match="holds a finished train run.*mode: 'train' -> 'eval'"):
        run(compose_config(*TINY, "mode=eval", f"checkpoint={bad}"), copy_of)
    assert (copy_of / RESULTS_FILE).read_bytes() == before


def test_truncated_last_checkpoint_falls_back_to_the_newest_readable(copy_of, caplog):
    last = copy_of / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    record = read_record(copy_of)
    record.status = "running"  # killed while writing last.ckpt
    write_record(copy_of, record)
    with caplog.at_level(logging.WARNING, logger="cvt_lab.rundir"):
        resumed = run(compose_config(*TINY), copy_of)
    assert resumed.status == "finished" and resumed.epochs == 1
    assert "last.ckpt cannot be read" in caplog.text and "epoch000.ckpt" in caplog.text

    for p in (copy_of / "checkpoints").glob("*.ckpt"):  # nothing readable left: refuse, keep the files
        p.write_bytes(b"cut")
    record.status = "running"
    write_record(copy_of, record)
    with pytest.raises(JobError, match="no readable checkpoint"):
        run(compose_config(*TINY), copy_of)


def test_a_second_owner_of_a_run_directory_is_refused(tmp_path):
    with run_lock(tmp_path):
        with pytest.raises(RunDirBusy, match=r"in use by another run \(pid \d+\)"):
            run(compose_config(*TINY), tmp_path)
    assert read_record(tmp_path) is None


@pytest.mark.parametrize("overrides", [["experiment=transfer", "data=digits"], ["recipe=finetune"]])
def test_fine_tuning_refuses_to_start_without_a_checkpoint(tmp_path, overrides):
    cfg, _ = compose_config(*TINY, *overrides, hydra=True)
    with pytest.raises(JobError, match="fine-tunes pre-trained weights.*add checkpoint=PATH"):
        run(cfg, tmp_path)
    record = read_record(tmp_path)
    assert record.status == "failed" and not (tmp_path / "checkpoints").exists()


def test_a_failure_that_cannot_be_recorded_says_why(tmp_path, monkeypatch):
    """The run directory turns read-only mid-run: the checkpoint cannot be saved, nor the failure recorded."""
    import lightning.pytorch as pl

    import cvt_lab.rundir as rundir

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    writes = []
    real_write = rundir.write_record
    monkeypatch.setattr(rundir, "write_record", lambda *a: read_only() if writes else writes.append(real_write(*a)))
    monkeypatch.setattr(pl.Trainer, "save_checkpoint", read_only)
    with pytest.raises(PermissionError) as failed:
        run(compose_config(*TINY), tmp_path)
    assert any("failure could not be recorded in" in n and "Permission denied" in n for n in failed.value.__notes__)
    assert read_record(tmp_path).status == "running"  # the last record it could write


def test_a_resumed_run_prunes_the_requeue_checkpoints_it_did_not_resume_from(tmp_path, tiny_run):
    """The job prunes them once it owns the directory (the newest readable is what it resumes from)."""
    target = tmp_path / "run"
    shutil.copytree(tiny_run, target)
    record = read_record(target)
    record.status = "failed"
    RunDir(target).write_record(record)
    stale = fake_checkpoint(target / "hpc_ckpt_1.ckpt", 1)  # older than every checkpoint of the run
    assert run(compose_config(*TINY), target).status == "finished"
    assert not stale.exists()


def test_a_finished_run_leaves_each_images_outcome_beside_its_record(tiny_run):
    """outcomes.npz: the test and validation images' top-1 correctness, in loader order (the report's test-set
    noise); written by the job, in the run directory's layout."""
    outcomes = RunDir(tiny_run).read_outcomes()
    record = read_record(tiny_run)
    assert set(outcomes) == {"val", "test"} and outcomes["test"].dtype == bool and len(outcomes["test"]) > 0
    assert outcomes["test"].mean() == pytest.approx(record.test_acc1, abs=1e-6)


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
