"""Parameters and multiply-adds against the paper's Table 2 / 3 / 7, and the counting tool itself."""

from __future__ import annotations

import functools

import pytest
import torch

from cvt_lab import create_model
from cvt_lab.complexity import count, main
from cvt_lab.complexity import count_preset as _count_preset

count_preset = functools.cache(_count_preset)  # several tests count the same preset


@pytest.mark.parametrize("name, params_m, gmacs", [
    ("cvt13", 19.98, 4.53),
    ("cvt21", 31.54, 7.13),
    ("cvtw24", 276.7, 60.86),
])
def test_table2_at_224(name, params_m, gmacs):
    c = count_preset(name, 224)
    assert c.params / 1e6 == pytest.approx(params_m, rel=0.01)
    assert c.macs / 1e9 == pytest.approx(gmacs, rel=0.015)


@pytest.mark.parametrize("name, gmacs", [("cvt13", 16.3), ("cvt21", 24.9), ("cvtw24", 193.2)])
def test_table3_macs_at_384(name, gmacs):
    assert count_preset(name, 384).macs / 1e9 == pytest.approx(gmacs, rel=0.015)


def test_table7_kv_stride_1():
    c = count_preset("cvt13", 224, kv_stride=1)
    assert c.macs / 1e9 == pytest.approx(6.55, rel=0.015)
    assert c.params == count_preset("cvt13", 224).params  # the stride changes compute, not weights


def test_attention_matmuls_are_counted():
    # Without the two attention matmuls CvT-13 is ~4.06 GMACs (the "mismatch" tools often report).
    assert count_preset("cvt13").macs / 1e9 > 4.5


@pytest.mark.parametrize("size, overrides", [(32, {}), (48, {"proj": "avg", "pos_embed": True})])
def test_count_real_model_equals_preset(size, overrides):
    model = create_model("cvt_tiny", **overrides)
    assert count(model, size) == _count_preset("cvt_tiny", size, **overrides)


@pytest.mark.parametrize("training", [True, False])
def test_count_leaves_model_untouched(training):
    model = create_model("cvt_tiny").train(training)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    devices = {p.device for p in model.parameters()}
    count(model, 32)
    assert model.training is training and all(m.training is training for m in model.modules())
    assert {p.device for p in model.parameters()} == devices
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_main_overrides(capsys):
    assert main(["model=cvt13", "image_size=384", "model.kv_stride=[1,1,1]"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("cvt13: params 19.997M") and "at 384x384" in stdout
    macs = float(stdout.split("MACs ")[1].split("G")[0])
    assert macs > count_preset("cvt13", 384).macs / 1e9  # k/v stride 1 costs more
    assert main(["model=nope"]) == 2
    assert "valid presets are" in capsys.readouterr().err
    assert main(["model=cvt13", "model.kv_stride=[1,1]"]) == 2
    assert main(["bogus"]) == 2


def test_table2_file(tmp_path, capsys, monkeypatch):
    from cvt_lab import complexity
    from cvt_lab.report import paper

    claims = [c for c in paper.complexity_claims() if c.label.startswith(("CvT-13 (Table 2)", "DeiT-S"))]
    monkeypatch.setattr(paper, "complexity_claims", lambda: claims)  # two rows: the table's values are tested above
    out = tmp_path / "reports" / "table2.md"
    assert main(["--table2", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert "| CvT-13 (Table 2) | 224 | 19.98M | 19.997M | +0.09% | 4.53 | 4.566 | +0.80% |" in lines
    assert sum(line.startswith("| DeiT-S") for line in lines) == 1
    assert f"wrote {out}" in capsys.readouterr().out
    assert complexity.table2_markdown(claims) == out.read_text()


def test_paper_claims_come_from_paper_tables():
    """Table 2's rows and the rows of Tables 3 and 7 with params and GMACs: one list, read from the YAML."""
    from cvt_lab.report.paper import complexity_claims

    claims = {c.label: c for c in complexity_claims()}
    assert [c.params for c in claims.values()][:3] == [19.98, 31.54, 276.7]
    stride1 = next(c for label, c in claims.items() if "k/v stride 1" in label)
    assert stride1.gmacs == 6.55 and dict(stride1.config.overrides) == {"kv_stride": (1, 1, 1)}
    assert {c.config.size for c in claims.values()} == {224, 384} and len(claims) == 8
