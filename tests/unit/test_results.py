"""The run record (cvt_lab.results): its file, its lock, its identity. What a run does with its directory
(cvt_lab.job.run, in-process) is tests/integration/test_run_directory.py."""

from __future__ import annotations

import json
import shutil
import threading

import pytest
import torch
from conftest import TINY, compose_config
from omegaconf import OmegaConf

from cvt_lab.results import (RESULTS_FILE, OutputDirCheck, RunDirBusy, RunDirError, RunRecord, checkpoint_id,
                             differences, identity_of, job_dirname, mark_failed, read_record, run_lock, unwritable,
                             write_record)

FLAT_KEYS = {"status", "mode", "test/acc1", "test/acc5", "val/acc1", "val/acc5", "test/loss", "params", "macs",
             "image_size", "epochs", "steps", "wall_s", "startup_s", "seed", "model", "data", "recipe", "precision",
             "threads", "checkpoint", "experiment", "overrides", "run_dir", "torch", "error", "identity",
             "identity_config", "versions", "started_at"}


# ------------------------------------------------------------------------------------------------ records


def test_record_json_is_flat_and_round_trips():
    record = RunRecord(status="finished", test_acc1=0.5, identity="ab", identity_config={"seed": 0},
                       versions={"torch": "2.x"}, extra={"from_a_newer_version": 1})
    data = record.to_json()
    assert FLAT_KEYS <= data.keys() and data["test/acc1"] == 0.5 and data["torch"] == "2.x"
    assert data["from_a_newer_version"] == 1  # unknown keys are kept
    assert RunRecord.from_json(json.loads(json.dumps(data))) == record
    old = RunRecord.from_json({"status": "finished", "test/acc1": 0.9, "torch": "2.0"})  # before identities
    assert old.versions == {"torch": "2.0"} and old.identity is None and old.extra == {}
    assert RunRecord.from_json({"status": "failed", "overrides": None}).overrides == []


def test_read_record_missing_unreadable_and_written(tmp_path):
    assert read_record(tmp_path) is None
    (tmp_path / RESULTS_FILE).write_text('{"status": "fini')  # cut short
    broken = read_record(tmp_path)
    assert broken.status == "failed" and "unreadable" in broken.error
    write_record(tmp_path, RunRecord(status="finished", seed=3))
    assert read_record(tmp_path).seed == 3
    assert '"status": "finished"' in (tmp_path / RESULTS_FILE).read_text()  # the Makefile greps for this


def test_concurrent_writers_never_share_a_temporary_file(tmp_path):
    def write(seed: int) -> None:
        for _ in range(20):
            write_record(tmp_path, RunRecord(status="finished", seed=seed))

    threads = [threading.Thread(target=write, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert read_record(tmp_path).seed in (0, 1, 2)
    assert [p.name for p in tmp_path.iterdir()] == [RESULTS_FILE]  # no temporary file left behind


def test_run_lock_refuses_a_second_owner_and_is_released(tmp_path):
    with run_lock(tmp_path):
        with pytest.raises(RunDirBusy, match="in use by another run"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):  # released
        pass
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    with pytest.raises(RunDirError, match="cannot write in .*: Not a directory; give a writable output directory"):
        with run_lock(blocked / "run"):
            pass


def test_an_output_directory_that_cannot_be_written_is_one_message(tmp_path, capsys):
    """Checked before Hydra makes the directory and its log file there (which would end in a traceback)."""
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    with pytest.raises(SystemExit) as exited:
        OutputDirCheck._check(blocked / "run")
    assert exited.value.code == 2
    expected = unwritable(blocked / "run", NotADirectoryError(20, "Not a directory"))
    assert capsys.readouterr().err == f"error: {expected}\n"


def test_mark_failed_keeps_finished_records_and_what_a_run_knew(tmp_path):
    write_record(tmp_path, RunRecord(status="running", identity="abc", seed=1))
    assert mark_failed(tmp_path, "killed").status == "failed"
    record = read_record(tmp_path)
    assert (record.status, record.error, record.identity, record.seed) == ("failed", "killed", "abc", 1)
    write_record(tmp_path, RunRecord(status="finished"))
    assert mark_failed(tmp_path, "killed") is None and read_record(tmp_path).status == "finished"


# ----------------------------------------------------------------------------------------------- identity


def test_identity_is_the_result_defining_config(tmp_path):
    cfg = compose_config(*TINY)
    base = identity_of(cfg)
    assert base[1]["model.dims"] == [32, 64, 128] and base[1]["seed"] == 0 and base[1]["checkpoint"] is None
    assert not any(k.startswith(("logger", "paths", "hydra", "threads", "resume")) for k in base[1])

    def identity_with(key: str, value) -> str:
        variant = cfg.copy()
        OmegaConf.update(variant, key, value, merge=False)
        return identity_of(variant)[0]

    for key, value in {"logger.kind": "tensorboard", "threads": 2, "paths.output_dir": "elsewhere", "resume": "x.ckpt",
                       "trainer.enable_progress_bar": True, "data.num_workers": 2, "data.root": "/moved",
                       "callbacks.step_checkpoint.every_n_train_steps": 50, "callbacks.lr_monitor": None}.items():
        assert identity_with(key, value) == base[0], key
    for key, value in {"model.dims": [16, 32, 64], "seed": 1, "recipe.optimizer.lr": 1e-4, "mode": "eval",
                       "trainer.precision": "bf16-mixed"}.items():
        assert identity_with(key, value) != base[0], key
    # callbacks that change what a run learns or when it stops are part of its identity
    assert identity_of(compose_config(*TINY, "callbacks=ema"))[0] != base[0]
    assert identity_of(compose_config(*TINY, "callbacks=early_stopping"))[0] != base[0]
    # a Hub checkpoint is identified by repository and revision, without the network
    hub = {identity_with("checkpoint", spec) for spec in ("hf-hub:microsoft/cvt-13", "hf-hub:microsoft/cvt-21",
                                                           "hf-hub:microsoft/cvt-13@0123abc")}
    assert len(hub) == 3 and base[0] not in hub

    a, b, copy = tmp_path / "a.pth", tmp_path / "b.pth", tmp_path / "elsewhere" / "a.pth"
    torch.save({"w": torch.zeros(2)}, a)
    torch.save({"w": torch.ones(2)}, b)
    copy.parent.mkdir()
    shutil.copy(a, copy)
    assert checkpoint_id(a) == checkpoint_id(copy) != checkpoint_id(b)  # the contents, not the path
    ids = [identity_with("checkpoint", str(p)) for p in (a, copy, b)]
    assert ids[0] == ids[1] != ids[2] and base[0] not in ids


def test_sweep_job_directory_names_the_checkpoint_contents(tmp_path):
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    torch.save({"w": torch.zeros(2)}, a)
    torch.save({"w": torch.ones(2)}, b)
    names = []
    for ckpt in (a, b):
        _, composed = compose_config("experiment=transfer", f"checkpoint={ckpt}", "data=digits", "seed=1", hydra=True)
        names.append(str(composed.hydra.sweep.subdir))
    assert names[0] == f"data=digits,seed=1,checkpoint={checkpoint_id(a)[:8]}" and names[0] != names[1]
    assert job_dirname("seed=0", None) == "seed=0"


def test_differences_name_the_changed_keys_only():
    old = RunRecord(status="finished", identity="1", identity_config={"a": 1, "b": [1], "gone": 0})
    new = RunRecord(status="running", identity="2", identity_config={"a": 2, "b": [1], "added": 0})
    assert differences(old, new) == ["a: 1 -> 2"]
    assert differences(RunRecord(status="finished"), new) == []  # a record from before identities
