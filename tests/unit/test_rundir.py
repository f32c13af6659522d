"""The run directory (cvt_lab.rundir.RunDir): its layout, the lock, a killed run's stale record, checkpoints. With a
second process or a trained run: tests/integration/test_run_directory.py."""

from __future__ import annotations

import pytest
from conftest import fake_checkpoint

from cvt_lab.results import RunRecord, read_record
from cvt_lab.rundir import KILLED, RunDir, checkpoint_file


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


@pytest.mark.parametrize("status", ["finished", None])
def test_mark_failed_keeps_a_finished_record(tmp_path, status):
    run = RunDir(tmp_path)
    if status:
        run.write_record(RunRecord(status=status))
    written = run.mark_failed("killed", ["seed=1"])
    assert (written is None) == (status == "finished")
    assert read_record(tmp_path).status == (status or "failed")
