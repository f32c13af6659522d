"""The performance benchmark (benchmarks/cvt_bench; quick mode: structure, and ratios computed from the
measured numbers; the CUDA report's targets and table on a small fake report; the training-loop profiler)
and the speed levers of the model (each leaves the fp32 numerics unchanged)."""

from __future__ import annotations

import copy
import importlib.util
import json
import statistics
import time

import pytest
import torch
from conftest import REPO_ROOT
from torch import nn

from benchmarks.cvt_bench import __main__ as bench
from benchmarks.cvt_bench.harness import Timing
from benchmarks.cvt_bench.loop import LoopProfiler, shares
from benchmarks.cvt_bench.models import COMPILED, Pair, model_args, randomize_norms
from benchmarks.cvt_bench.report import GPU_TARGETS, check_targets, table
from benchmarks.cvt_bench.sections import add_flops, compare, side_by_side
from cvt_lab.models import create_model
from cvt_lab.models.cvt import FAST_PATHS, fast_paths

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    assert bench.main(["--quick", "--out", str(out)]) == 0
    assert out.with_suffix(".txt").read_text().startswith("cvt_bench: cvt_tiny")
    return json.loads(out.read_text())


def close(a: float, b: float) -> bool:
    return a == pytest.approx(b, rel=1e-9, abs=1e-12)


def test_the_benchmark_is_not_part_of_the_package():
    assert importlib.util.find_spec("cvt_lab.bench") is None
    assert not [p for p in (REPO_ROOT / "src").rglob("*.py") if "import benchmarks" in p.read_text()
                or "from benchmarks" in p.read_text()]


def test_quick_report_sections(report):
    assert set(report) >= {"meta", "config", "matmul_peak_gflops", "complexity", "throughput", "memory",
                           "numerics", "resolution", "levers", "targets"}
    assert report["config"]["quick"] and report["meta"]["threads"] == 1
    assert set(report["matmul_peak_gflops"]) == {"fp32", "bf16"}
    assert all(v > 0 for v in report["matmul_peak_gflops"].values())
    # the same architecture on both sides: equal parameter counts, the same counted MACs
    assert report["complexity"]["ours"]["params"] == report["complexity"]["theirs"]["params"]
    assert report["complexity"]["ours"]["macs"] == report["complexity"]["theirs"]["macs"] > 0


def test_throughput_figures_and_ratios(report):
    iters, batch = report["config"]["iters"], report["config"]["batch"]
    for p in ("fp32", "bf16"):
        res = report["throughput"][p]
        for name in ("ours", "theirs"):
            macs = report["complexity"][name]["macs"]
            for mode, factor in (("train", 3), ("infer", 1)):
                e = res[name][mode]
                assert len(e["samples_ms"]) == iters
                median_s = statistics.median(e["samples_ms"]) / 1e3
                assert e["images_per_s"] == pytest.approx(batch / median_s, rel=1e-3)  # samples are rounded
                assert close(e["gflops"], 2 * factor * macs * e["images_per_s"] / 1e9)
                assert close(e["mfu"], e["gflops"] / report["matmul_peak_gflops"][p])
        for mode in ("train", "infer"):
            r = res["ratio"][mode]
            assert close(r["images_per_s"], res["ours"][mode]["images_per_s"] / res["theirs"][mode]["images_per_s"])
            assert close(r["ms_per_image"], res["ours"][mode]["ms_per_image"] / res["theirs"][mode]["ms_per_image"])
    tp = report["throughput"]
    for mode in ("train", "infer"):
        assert close(tp["bf16"]["ratio_vs_theirs_fp32"][mode],
                     tp["bf16"]["ours"][mode]["images_per_s"] / tp["fp32"]["theirs"][mode]["images_per_s"])


def test_memory_resolution_levers_targets(report):
    mem = report["memory"]
    assert mem["ours"]["peak_mib"] >= mem["ours"]["live_before_step_mib"] > 0
    assert close(mem["ratio"]["peak_mib"], mem["ours"]["peak_mib"] / mem["theirs"]["peak_mib"])

    res = report["resolution"]
    assert res["sizes"] == report["config"]["resolutions"]
    for s in map(str, res["sizes"]):
        for mode in ("train", "infer"):
            assert close(res["ratio"][s][mode]["ms_per_image"],
                         res["ours"][s][mode]["ms_per_image"] / res["theirs"][s][mode]["ms_per_image"])
    smallest, largest = (str(s) for s in (res["sizes"][0], res["sizes"][-1]))
    assert res["growth_vs_smallest"]["macs"][smallest] == 1.0 < res["growth_vs_smallest"]["macs"][largest]

    assert {v["lever"] for v in report["levers"].values()} == set(FAST_PATHS)
    for v in report["levers"].values():
        assert close(v["speedup"], v["ms_per_step_off"] / v["ms_per_step_on"])

    assert report["numerics"]["ok"] and report["numerics"]["max_abs_diff_fp32"] <= 1e-4
    targets = {t["target"]: t for t in report["targets"]}
    fp32_train = next(t for name, t in targets.items() if name.startswith("fp32 training"))
    assert close(fp32_train["value"], report["throughput"]["fp32"]["ratio"]["train"]["images_per_s"])
    for t in report["targets"]:
        assert t["met"] == (t["value"] >= t["threshold"] if "<=" not in t["target"] else t["value"] <= t["threshold"])
    # each throughput target carries its ceiling: the measured matmul peak over theirs' fp32 GFLOP/s
    theirs_fp32 = report["throughput"]["fp32"]["theirs"]
    bf16_infer = next(t for name, t in targets.items() if name.startswith("bf16 inference"))
    assert close(bf16_infer["ceiling"], report["matmul_peak_gflops"]["bf16"] / theirs_fp32["infer"]["gflops"])
    assert close(fp32_train["ceiling"], report["matmul_peak_gflops"]["fp32"] / theirs_fp32["train"]["gflops"])
    assert fp32_train["reachable"] == (fp32_train["ceiling"] >= 1.4)


def test_table_prints_every_figure(report):
    text = table(report)
    for needle in ("fp32 train images/s", "bf16 infer vs theirs fp32", "peak train memory", "levers", "targets:"):
        assert needle in text
    # the sections only a full run has (subprocesses, --data) print too
    full = json.loads(json.dumps(report))
    speed = {"train": 1.1, "infer": 1.2}
    full["levers"]["malloc"] = {"malloc": "tuned", "speedup": {"ours": speed, "theirs": speed}, "note": "n"}
    full["levers"]["compile"] = {"fp32": {"train_compile_s": 300.0, "train": {"speedup": 1.1},
                                          "infer": {"speedup": 1.2}}}
    full["training_loop"] = {"available": False, "note": "the run failed"}
    full["digits_accuracy"] = {"test_acc1": {"fp32": 0.98, "bf16": 0.98}, "step_speedup_bf16": 1.5,
                               "runs": {"fp32": {"wall_s": 60.0, "startup_s": 6.0, "data_wait_fraction": 0.01,
                                                 "fraction_of_wall": {"startup": 0.1, "train_steps": 0.75}}}}
    full["loader"] = {"root": "/data/in1k", "train_images": 1000, "batch_size": 16, "image_size": 224,
                      "loader": {"uint8": {"1": {"images_per_s": 181.0, "per_worker": 181.0},
                                           "2": {"images_per_s": 350.0, "per_worker": 175.0}}},
                      "model_train_images_per_s": {"fp32": 5.3, "bf16": 9.9}}
    text = table(full)
    for needle in ("malloc tuned (ours, fp32)", "torch.compile (ours, fp32)", "the run failed", "default digits run",
                   "startup 10%, train_steps 75%", "2 worker(s) 350 / 175", "model training images/s (ours, this run)"):
        assert needle in text


# ------------------------------------------------------------------------------------- the CUDA form


def fake_side_by_side(images_per_s: dict[str, dict[str, float]], macs: int = 10**9, peak: float = 3e4) -> dict:
    """A throughput block as side_by_side makes it, from given images/s (model -> mode -> images/s)."""
    res = {n: {m: {"images_per_s": v, "ms_per_image": 1e3 / v} for m, v in modes.items()}
           for n, modes in images_per_s.items()}
    for n in images_per_s:
        add_flops(res[n], macs, peak)
    compare(res)
    return res


def test_cuda_report_targets_and_table():
    """The GPU targets of issue 9 on a fake CUDA report: our faster form against transformers eager and
    compiled in bf16 training (batch 128) and bf16 inference at batch 256; MFU beside every figure."""
    four = {"ours": {"train": 2000.0, "infer": 6000.0}, "theirs": {"train": 1000.0, "infer": 3000.0},
            "ours" + COMPILED: {"train": 3200.0, "infer": 7000.0},
            "theirs" + COMPILED: {"train": 2000.0, "infer": 4000.0}}
    bf16 = fake_side_by_side(four)
    assert bf16["best_ours"] == {"train": "ours" + COMPILED, "infer": "ours" + COMPILED}
    assert close(bf16["ratio_best_vs_theirs"]["train"], 3.2)
    assert close(bf16["ratio_best_vs_theirs_compiled"]["train"], 1.6)
    assert close(bf16["ratio_compiled"]["infer"]["images_per_s"], 7000 / 4000)
    assert close(bf16["ours"]["train"]["mfu"], 2 * 3 * 1e9 * 2000 / 1e9 / 3e4)
    inference = fake_side_by_side({n: {"infer": v["infer"] * 1.1} for n, v in four.items()})
    slow = fake_side_by_side({n: {"train": v["train"] / (2 if n.startswith("ours") else 1)} for n, v in four.items()})
    report = {
        "meta": {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "torch": "2.11.0", "threads": 16,
                 "malloc": "default", "load_average_start": None},
        "config": {"model": "cvt13", "batch": 128, "image_size": 224},
        "matmul_peak_gflops": {"fp32": 5e4, "bf16": 7.8e5},
        "throughput": {"bf16": bf16, "fp32": fake_side_by_side(four)},
        "throughput_by_size": {"384": {"bf16": slow}},
        "inference_batch": {"batch": 256, "precision": "bf16", "image_size": 224, "results": inference},
        "memory": {"batch": 128, "precision": "bf16", "ours": {"peak_mib": 9000.0}, "theirs": {"peak_mib": 12000.0},
                   "ours" + COMPILED: {"peak_mib": 8000.0}, "theirs" + COMPILED: {"peak_mib": 10000.0},
                   "ratio": {"peak_mib": 0.75}},
        "numerics": {"max_abs_diff_fp32": 2e-6, "ok": True},
    }
    targets = {t["target"]: t for t in check_targets(report)}
    expected = {
        "bf16 training at 224px, batch 128, ours / transformers eager >= 2": (3.2, True),
        "bf16 training at 224px, batch 128, ours / transformers compiled >= 1.5": (1.6, True),
        "bf16 training at 384px, batch 128, ours / transformers eager >= 2": (1.6, False),
        "bf16 training at 384px, batch 128, ours / transformers compiled >= 1.5": (0.8, False),
        "bf16 inference at 224px, batch 256, ours / transformers eager >= 2.5": (7000 / 3000, False),
        "peak training memory at batch 128, ours / theirs <= 1": (0.75, True),
        "fp32 logits, max |optimized - plain| <= 1e-4": (2e-6, True),
    }
    assert set(targets) == set(expected)
    for name, (value, met) in expected.items():
        assert close(targets[name]["value"], value) and targets[name]["met"] is met, name
    assert GPU_TARGETS["train_vs_theirs_compiled"] == 1.5
    report["targets"] = list(targets.values())
    text = table(report)
    for needle in ("ours_compiled", "theirs_compiled", "bf16 384px train images/s", "bf16 b256 infer images/s",
                   "12000.0 (40%)", "19200.0 (64%)", "best ours (ours_compiled) / theirs 3.20, / theirs compiled 1.60",
                   "[ours: ours_compiled]"):
        assert needle in text, needle


def test_compiled_twins_side_by_side_on_cpu():
    """The CUDA form's four models on CPU, timed in one loop with figures and ratios for all four. The twins
    are plain copies here: compiling costs many seconds on CPU, and the compile of the model itself is tested
    with the model."""
    pair = Pair(model_args("cvt_tiny"), "cpu")
    for name in ("ours", "theirs"):
        pair.models[name + COMPILED] = copy.deepcopy(pair.models[name])
    res = side_by_side(pair, "cpu", 2, "fp32", 32, Timing(1, 0), peak_gflops=100.0, modes=("infer",))
    assert set(res["compile"]) == {"ours" + COMPILED, "theirs" + COMPILED}
    assert all(v["infer_compile_s"] > 0 for v in res["compile"].values())
    assert len(pair.models) == 4 and all(res[n]["infer"]["gflops"] > 0 for n in pair.models)
    best = res["best_ours"]["infer"]
    assert close(res["ratio_best_vs_theirs_compiled"]["infer"],
                 res[best]["infer"]["images_per_s"] / res["theirs" + COMPILED]["infer"]["images_per_s"])


def test_cuda_without_a_gpu_and_bad_data_say_so(tmp_path, capsys):
    if not torch.cuda.is_available():
        assert bench.main(["--device", "cuda", "--quick"]) == 2
        assert "torch.cuda.is_available() is False" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        bench.parse(["--data", str(tmp_path)])
    assert e.value.code == 2 and "no train/ folder" in capsys.readouterr().err
    opts = bench.parse(["--device", "cuda"])  # the GPU setting by default
    assert (opts.batch, opts.memory_batch, opts.resolutions, opts.memory_precision) == (128, 128, [224, 384], "bf16")


# ------------------------------------------------------------------------------------ the training loop


def test_loop_profiler_shares(tmp_path):
    """Lightning's action names as the loops report them: steps, data fetches, the validation hooks."""
    prof = LoopProfiler(out=str(tmp_path / "timings.json"), launched=time.time())
    actions = ["run_training_epoch", "[_TrainingEpochLoop].train_dataloader_next", "run_training_batch",
               "[_TrainingEpochLoop].train_dataloader_next", "run_training_batch",
               "[LightningModule]ImageClassifier.on_validation_start", "[Strategy]X.validation_step",
               "[LightningModule]ImageClassifier.on_validation_end"]
    for action in actions:
        prof.start(action)
        time.sleep(0.002)
        prof.stop(action)
    s = prof.stats
    assert (s["epochs"], s["steps"]) == (1, 2) and s["first_step_s"] is not None
    assert s["data_s"] > 0 and s["step_s"] > 0 and s["gap_s"] > 0 and s["validation_s"] >= 0.006 and s["test_s"] == 0
    out = shares(s, wall=10.0)
    assert close(out["fraction_of_wall"]["train_steps"], s["step_s"] / 10)
    assert close(out["data_wait_fraction"], s["data_s"] / (s["step_s"] + s["data_s"]))


# ------------------------------------------------------------------------------------------ numerics


def randomized(name: str = "cvt_tiny", **overrides) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name, **{"num_classes": 10, **overrides})
    return randomize_norms(model).eval()


def logits(model: nn.Module, size: int = 32, batch: int = 3) -> torch.Tensor:
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("overrides", [{}, {"proj": "avg"}, {"proj": "linear", "pos_embed": True},
                                       {"cls_token": False}, {"act": "gelu", "attn_scale": "head"}])
def test_optimized_inference_equals_plain_fp32(overrides):
    model = randomized(**overrides)
    fast = logits(model)
    with fast_paths(model, False):
        plain = logits(model)
    assert (fast - plain).abs().max().item() <= 1e-4
    with torch.inference_mode():  # evaluation's mode: no autograd at all
        x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        assert (model(x) - plain).abs().max().item() <= 1e-4


@pytest.mark.parametrize("lever", sorted(FAST_PATHS))
def test_each_lever_alone_keeps_the_logits(lever):
    model = randomized()
    with fast_paths(model, False):
        plain = logits(model)
        with fast_paths(model, **{lever: True}):
            one = logits(model)
    assert (one - plain).abs().max().item() <= 1e-4


def test_cvt13_optimized_logits_equal_plain():
    """The issue's numerics target on the real architecture: CvT-13, fp32, eval."""
    model = randomized("cvt13", num_classes=1000)
    fast = logits(model, size=96, batch=2)
    with fast_paths(model, False):
        plain = logits(model, size=96, batch=2)
    assert (fast - plain).abs().max().item() <= 1e-4


def test_training_step_unchanged():
    """Training mode: the same loss, gradients for the same parameters, the same BatchNorm statistics."""
    results = []
    for enabled in (True, False):
        model = randomized().train()
        x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
        with fast_paths(model, enabled):
            torch.manual_seed(3)
            loss = model(x).square().mean()
            loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        stats = {n: b.clone() for n, b in model.named_buffers()}
        results.append((loss.item(), grads, stats))
    (loss_fast, grads_fast, stats_fast), (loss_plain, grads_plain, stats_plain) = results
    assert loss_fast == pytest.approx(loss_plain, rel=1e-5)
    assert grads_fast.keys() == grads_plain.keys()
    scale = max(g.abs().max().item() for g in grads_plain.values())
    for n in grads_plain:
        assert (grads_fast[n] - grads_plain[n]).abs().max().item() <= 1e-4 * scale, n
    for n in stats_plain:
        assert torch.allclose(stats_fast[n].float(), stats_plain[n].float(), atol=1e-5), n


def test_bf16_autocast_close_to_fp32():
    model = randomized()
    ref = logits(model)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x).float()
    assert (low - ref).abs().max().item() <= 0.05 * ref.abs().max().item() + 0.05
    model.train()  # bf16 training path (fp32 strided depthwise convs, explicit attention) runs and back-propagates
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x).float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_fast_paths_switch_one_model_only():
    model, other = randomized(), randomized()
    assert model.set_fast_paths() == dict(FAST_PATHS)
    with fast_paths(model, False) as flags:
        assert not any(flags.values()) and other.set_fast_paths() == dict(FAST_PATHS)
        with fast_paths(model, silu_mlp=True) as inner:
            assert inner["silu_mlp"] and not inner["fused_attention"]
        assert not model.set_fast_paths()["silu_mlp"]
    assert model.set_fast_paths() == dict(FAST_PATHS)
    with pytest.raises(TypeError):
        FAST_PATHS["silu_mlp"] = False  # the defaults are read-only: no global switch
    with pytest.raises(ValueError, match="unknown speed lever"):
        model.set_fast_paths(no_such_lever=True)
