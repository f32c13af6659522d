"""``python -m cvt_lab.plan``: a sweep's jobs as the sweeper composes them, finished ones skipped, each job's
time estimated from a (fake) benchmark or one measured step; nothing is trained."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

from cvt_lab.plan.__main__ import main
from cvt_lab.plan.estimate import sweep_wall
from cvt_lab.results import RunRecord, write_record

EXPERIMENT = "ablation_kv_stride"

# A benchmark result as benchmarks/cvt_bench writes it, reduced to what the plan reads (made-up numbers).
FAKE_BENCH = {"meta": {"device": "cpu"}, "config": {"model": "cvt13", "image_size": 224},
              "complexity": {"ours": {"macs": 4_566_089_216}},
              "throughput": {"fp32": {"ours": {"train": {"images_per_s": 5.0}, "infer": {"images_per_s": 15.0}}}}}


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plan")
    bench = tmp / "bench.json"
    bench.write_text(json.dumps(FAKE_BENCH))
    out = tmp / "plan.json"
    code = main([f"experiment={EXPERIMENT}", f"paths.output_dir={tmp}", "--bench", str(bench), "--json", str(out)])
    assert code == 0
    return tmp, json.loads(out.read_text())


def test_plan_lists_every_job_of_the_sweep_with_an_estimate(planned):
    _, plan = planned
    experiment = yaml.safe_load((REPO_ROOT / "conf" / "experiment" / f"{EXPERIMENT}.yaml").read_text())
    params = experiment["hydra"]["sweeper"]["params"]
    expected = list(itertools.product(*(str(v).split(",") for v in params.values())))  # rows x seeds
    jobs = plan["jobs"]
    assert len(jobs) == len(expected) == 6
    assert len({j["job_dir"] for j in jobs}) == 6 and all("model/kv_stride=" in j["job"] for j in jobs)
    assert all(j["status"] == "new" and j["seconds"] > 0 and j["epochs"] >= 1 and j["train_images"] > 0 for j in jobs)
    assert all(j["model"] == "cvt_tiny" and j["image_size"] == 32 and j["precision"] == "fp32" for j in jobs)
    summary = plan["summary"]
    assert summary["to_run"] == 6 and summary["finished"] == 0
    # the CPU scale's default launcher runs 2 jobs at once, each started when a slot is free
    assert summary["slots"] == 2 and "2 CPU slots" in summary["parallelism"]
    assert summary["wall_seconds"] == pytest.approx(sweep_wall([j["seconds"] for j in jobs], 2), abs=0.1)
    assert summary["job_seconds"] / 2 <= summary["wall_seconds"] < summary["job_seconds"]
    assert any("bench.json" in s for s in plan["speed"]) and any("counted in memory" in d for d in plan["data"])


def test_plan_skips_finished_jobs_and_measures_a_step(planned, capsys):
    """A job whose directory holds the finished run of the same identity is skipped (not estimated); the other
    is timed by one measured training step on the CPU."""
    tmp, plan = planned
    done = next(j for j in plan["jobs"] if {"model/kv_stride=stride1", "seed=0"} <= set(j["overrides"]))
    Path(done["job_dir"]).mkdir(parents=True)
    write_record(done["job_dir"], RunRecord(status="finished", identity=done["identity"]))
    code = main([f"experiment={EXPERIMENT}", f"paths.output_dir={tmp}", "seed=0", "--measure", "--steps", "1",
                 "--format", "json"])
    assert code == 0
    again = json.loads(capsys.readouterr().out)
    status = {j["job"]: (j["status"], j["seconds"]) for j in again["jobs"]}
    assert status[done["job"]] == ("finished", None)
    other = next(v for k, v in status.items() if k != done["job"])
    assert other[0] == "new" and other[1] > 0
    assert again["summary"]["to_run"] == 1 and again["summary"]["finished"] == 1
    assert any(s.startswith("measured") for s in again["speed"])


def test_plan_of_an_unknown_experiment_is_bad_input(capsys):
    assert main(["experiment=no_such_table"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "experiment/no_such_table" in err and EXPERIMENT in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_plan_true_on_the_main_command_is_the_plan(monkeypatch, capsys):
    """``python -m cvt_lab ... plan=true -m`` gives the plan's answer (here its one-line refusal of an unknown
    experiment), not Hydra's, and starts no sweep."""
    import cvt_lab.__main__ as cli

    monkeypatch.setattr(sys, "argv", ["cvt_lab", "experiment=no_such_table", "plan=true", "-m"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "valid choices:" in err and "HYDRA_FULL_ERROR" not in err
