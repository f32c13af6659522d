"""What each rank of a data-parallel run is given, without starting processes: its share of every epoch (and
where a resumed epoch goes on), and the run directory processes started together must share. The 2-process runs
are tests/e2e/test_ddp.py."""

from __future__ import annotations

from cvt_lab.data.base import EpochRandomSampler, SeededSampler


def test_ranks_share_each_epoch_without_overlap_and_resume_mid_epoch():
    data = list(range(17))
    ranks = [EpochRandomSampler(data, seed=3, epoch=lambda: 1, num_replicas=2, rank=r) for r in (0, 1)]
    shares = [list(s) for s in ranks]
    assert [len(s) for s in shares] == [9, 9]  # padded by one repeated sample, as torch's DistributedSampler
    assert set(shares[0]) | set(shares[1]) == set(data) and len(set(shares[0]) & set(shares[1])) == 1
    alone = list(EpochRandomSampler(data, seed=3, epoch=lambda: 1))
    assert shares[0] == alone[0::2] and shares[1] == (alone + alone[:1])[1::2]  # one order, dealt out
    # Augmentation seeds: one per position of the epoch, the padding repeat's unlike its original's.
    pairs = [list(SeededSampler(data, seed=3, epoch=lambda: 1, num_replicas=2, rank=r)) for r in (0, 1)]
    assert [i for i, _ in pairs[0]] == shares[0]
    assert len({seed for p in pairs for _, seed in p}) == 18
    ranks[1].resume(epoch=1, samples=4)  # a checkpoint after 2 batches of 2 of epoch 1
    assert list(ranks[1]) == shares[1][4:]
    ranks[1].resume(epoch=0, samples=4)  # another epoch's position: the whole epoch
    assert list(ranks[1]) == shares[1]


def test_processes_started_together_must_share_a_named_run_directory(monkeypatch):
    from cvt_lab.__main__ import unshared_run_dir

    for var in ("WORLD_SIZE", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    assert unshared_run_dir(["trainer=ddp"]) is None  # one process: Lightning's launcher passes the directory on
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun
    assert "hydra.run.dir=" in unshared_run_dir(["trainer=ddp"])
    assert unshared_run_dir(["trainer=ddp", "hydra.run.dir=outputs/runs/x"]) is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("SLURM_NTASKS", "8")  # srun
    assert unshared_run_dir(["trainer=ddp"]) is not None
