"""The performance benchmark (quick mode: structure, and ratios computed from the measured numbers) and the
speed levers of the model (each leaves the fp32 numerics unchanged)."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
from torch import nn

from cvt_lab import bench
from cvt_lab.models import create_model
from cvt_lab.models.cvt import FAST_PATHS, fast_paths, speed_levers

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    assert bench.main(["--quick", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def close(a: float, b: float) -> bool:
    return a == pytest.approx(b, rel=1e-9, abs=1e-12)


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
    text = bench.table(report)
    for needle in ("fp32 train images/s", "bf16 infer vs theirs fp32", "peak train memory", "levers", "targets:"):
        assert needle in text
    # the sections only a full run has (subprocesses) print too
    full = json.loads(json.dumps(report))
    speed = {"train": 1.1, "infer": 1.2}
    full["levers"]["malloc"] = {"malloc": "tuned", "speedup": {"ours": speed, "theirs": speed}, "note": "n"}
    full["levers"]["compile"] = {"fp32": {"train_compile_s": 300.0, "train": {"speedup": 1.1},
                                          "infer": {"speedup": 1.2}}}
    full["training_loop"] = {"available": False, "note": "CLI not available"}
    full["digits_accuracy"] = {"test_acc1": {"fp32": 0.98, "bf16": 0.98}, "step_speedup_bf16": 1.5,
                               "runs": {"fp32": {"wall_s": 60.0, "startup_s": 6.0, "data_wait_fraction": 0.01,
                                                 "fraction_of_wall": {"startup": 0.1, "train_steps": 0.75}}}}
    text = bench.table(full)
    for needle in ("malloc tuned (ours, fp32)", "torch.compile (ours, fp32)", "CLI not available", "default digits run",
                   "startup 10%, train_steps 75%"):
        assert needle in text


# ------------------------------------------------------------------------------------------ numerics


def randomized(name: str = "cvt_tiny", **overrides) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name, **{"num_classes": 10, **overrides})
    return bench.randomize_norms(model).eval()


def logits(model: nn.Module, size: int = 32, batch: int = 3) -> torch.Tensor:
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("overrides", [{}, {"proj": "avg"}, {"proj": "linear", "pos_embed": True},
                                       {"cls_token": False}, {"act": "gelu", "attn_scale": "head"}])
def test_optimized_inference_equals_plain_fp32(overrides):
    model = randomized(**overrides)
    fast = logits(model)
    with fast_paths(False):
        plain = logits(model)
    assert (fast - plain).abs().max().item() <= 1e-4
    with torch.inference_mode():  # evaluation's mode: no autograd at all
        x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        assert (model(x) - plain).abs().max().item() <= 1e-4


@pytest.mark.parametrize("lever", sorted(FAST_PATHS))
def test_each_lever_alone_keeps_the_logits(lever):
    model = randomized()
    with fast_paths(False):
        plain = logits(model)
        with fast_paths(**{lever: True}):
            one = logits(model)
    assert (one - plain).abs().max().item() <= 1e-4


def test_cvt13_optimized_logits_equal_plain():
    """The issue's numerics target on the real architecture: CvT-13, fp32, eval."""
    model = randomized("cvt13", num_classes=1000)
    fast = logits(model, size=96, batch=2)
    with fast_paths(False):
        plain = logits(model, size=96, batch=2)
    assert (fast - plain).abs().max().item() <= 1e-4


def test_training_step_unchanged():
    """Training mode: the same loss, gradients for the same parameters, the same BatchNorm statistics."""
    results = []
    for enabled in (True, False):
        model = randomized().train()
        x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
        with fast_paths(enabled):
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
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad
               and p.grad is not None)


def test_fast_paths_switch():
    assert speed_levers() == FAST_PATHS and all(FAST_PATHS.values())
    with fast_paths(False) as flags:
        assert not any(flags.values())
        with fast_paths(silu_mlp=True):
            assert speed_levers()["silu_mlp"] and not speed_levers()["fused_attention"]
        assert not speed_levers()["silu_mlp"]
    assert speed_levers() == FAST_PATHS
    with pytest.raises(TypeError):
        FAST_PATHS["silu_mlp"] = False  # the defaults are read-only: no global switch
    with pytest.raises(ValueError, match="unknown speed lever"):
        fast_paths(no_such_lever=True)
