"""Handwriting (cvt_lab.htr): the CTC line recognizers on variable-width lines, the charset, batching and padding,
the ablations' configs, the report. The line data modules and the job (in-process) are
tests/integration/test_htr_job.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import compose_config

from cvt_lab.htr import Charset, build_crnn, build_cvt_line_recognizer
from cvt_lab.htr.batching import BucketBatchSampler, LineAugment, LineCollate, resize_to_height
from cvt_lab.htr.model import LineTooNarrowError

TINY_CVT = dict(num_classes=7, in_chans=1, img_size=32, depths=[1, 1, 1], dims=[16, 32, 32], heads=[1, 2, 2],
                embed_kernel=[7, 3, 3], embed_stride=[4, 2, 1], embed_padding=[2, 1, 1], cls_token=False,
                drop_path=0.0)


def alone_and_batched(model: torch.nn.Module, width: int = 57, other: int = 131):
    """The logits of a line alone, and of the same line right-padded in a batch with a wider one."""
    torch.manual_seed(0)
    line, wide = torch.rand(1, 1, 32, width), torch.rand(1, 1, 32, other)
    batch = torch.zeros(2, 1, 32, other)
    batch[0, :, :, :width], batch[1] = line[0], wide[0]
    model.eval()
    with torch.no_grad():
        alone = model(line, torch.tensor([width]))
        batched = model(batch, torch.tensor([width, other]))
    frames = int(model.frame_widths(torch.tensor([width])))
    return alone[0, :frames], batched[0, :frames], alone.shape[1] == frames


@pytest.mark.parametrize("args", [
    {},  # conv token embedding, dw_bn projections, k/v stride 2, no position embedding
    {"pos_embed": [True, True, True]},  # each line's own resized table, not the batch's
    {"embed_type": ["patch", "patch", "patch"], "pos_embed": [False, True, False]},
    {"kv_stride": [1, 1, 1], "proj": ["linear", "dw_bn", "dw_bn"]},
    {"cls_token": [False, False, True]},
])
def test_a_line_gets_the_same_logits_alone_and_padded_in_a_batch(args):
    alone, batched, no_extra_frames = alone_and_batched(build_cvt_line_recognizer(**{**TINY_CVT, **args}))
    assert no_extra_frames
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_crnn_logits_do_not_depend_on_the_batch_either():
    alone, batched, _ = alone_and_batched(build_crnn(num_classes=7, crnn_dims=[8, 8, 8, 8], rnn_hidden=8))
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_unpadded_lines_keep_the_classifier_numerics():
    """No widths: the backbone's plain forward (what classification runs), the same logits as widths of the batch."""
    model = build_cvt_line_recognizer(**TINY_CVT).eval()
    x = torch.rand(2, 1, 32, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x, torch.tensor([64, 64])), atol=1e-5, rtol=1e-5)


def test_a_line_too_narrow_for_the_strides_is_one_clear_error():
    model = build_cvt_line_recognizer(**TINY_CVT)
    with pytest.raises(LineTooNarrowError, match=r"a line 2 px wide is too narrow .* at least 3 px"):
        model(torch.zeros(2, 1, 32, 40), torch.tensor([2, 40]))


def test_charset_encodes_and_greedy_decoding_merges_repeats_and_drops_blanks():
    cs = Charset.from_texts(["ab a", "ba"])
    assert cs.chars == [" ", "a", "b"] and cs.num_classes == 4 and cs.encode("ab") == [2, 3]
    with pytest.raises(ValueError, match=r"\['c'\] are not in the charset"):
        cs.encode("abc")
    path = torch.tensor([[2, 2, 0, 2, 3, 3, 1, 0, 3, 3]])  # a a _ a b b ' ' _ b | b (past the line's frames)
    logits = torch.nn.functional.one_hot(path, 4).float()
    assert cs.greedy(logits, torch.tensor([9])) == ["aab b"]


def test_bucketing_batches_lines_of_similar_width_in_an_order_fixed_by_seed_and_epoch():
    widths = list(np.random.default_rng(0).integers(20, 400, 200))
    sampler = BucketBatchSampler(widths, 10, shuffle=True, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(200)) and len(batches) == len(sampler) == 20
    spread = np.mean([max(widths[i] for i in b) - min(widths[i] for i in b) for b in batches])
    assert spread < 60  # random batches: ~300
    assert list(sampler) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_collate_pads_right_with_background_and_resize_keeps_the_aspect():
    assert resize_to_height(torch.ones(1, 64, 300), 32).shape == (1, 32, 150)
    batch = LineCollate(Charset(list("01")), min_width=8)([(torch.ones(1, 4, 5), "01"), (torch.ones(1, 4, 12), "1")])
    assert batch.images.shape == (2, 1, 4, 12) and batch.widths.tolist() == [8, 12]
    assert batch.images[0, :, :, 5:].abs().sum() == 0 and batch.targets.tolist() == [1, 2, 2]
    aug = LineAugment(p=1.0)(torch.rand(1, 32, 90), torch.Generator().manual_seed(0))
    assert aug.shape == (1, 32, 90) and 0 <= float(aug.min()) and float(aug.max()) <= 1


def test_every_cvt_ablation_axis_composes_onto_the_line_recognizer():
    cfg = compose_config("experiment=htr", "+model/pos_embed=every", "+model/conv_embed=patch_nopos",
                         "+model/kv_stride=stride1")
    assert cfg.model._target_ == "cvt_lab.htr.build_cvt_line_recognizer"
    assert list(cfg.model.embed_type) == ["patch"] * 3 and list(cfg.model.kv_stride) == [1] * 3
    assert list(cfg.model.pos_embed) == [False] * 3  # conv_embed's rows set pos_embed too, last wins


def test_cvt_classifier_weights_load_into_the_backbone_with_a_fresh_ctc_head(tmp_path):
    from cvt_lab.htr.job import load_line_checkpoint
    from cvt_lab.models import build_cvt

    args = {k: v for k, v in TINY_CVT.items() if k not in ("num_classes", "in_chans")}
    classifier = build_cvt(num_classes=10, in_chans=3, **args)
    torch.save(classifier.state_dict(), tmp_path / "cvt.pth")
    model = build_cvt_line_recognizer(**TINY_CVT)
    assert load_line_checkpoint(model, str(tmp_path / "cvt.pth"), charset_size=7)
    torch.testing.assert_close(model.backbone.stages[1].blocks[0].attn.proj_q.weight,
                               classifier.stages[1].blocks[0].attn.proj_q.weight)
    rgb = classifier.stages[0].patch_embed.proj.weight
    torch.testing.assert_close(model.backbone.stages[0].patch_embed.proj.weight, rgb.sum(1, keepdim=True))


@pytest.mark.parametrize(("experiment", "axis", "rows"), [
    ("htr_ablation_pos_embed", "model/pos_embed", "none,first,last,every"),
    ("htr_ablation_conv_embed", "model/conv_embed", "patch_nopos,patch_pos,conv_pos,conv_nopos"),
    ("htr_ablation_kv_stride", "model/kv_stride", "stride1,stride2"),
])
def test_htr_ablations_sweep_the_cvt_axes_on_lines(experiment, axis, rows):
    cfg, composed = compose_config(f"experiment={experiment}", hydra=True)
    assert cfg.model._target_ == "cvt_lab.htr.build_cvt_line_recognizer" and cfg.data.name == "digit_lines"
    assert cfg.experiment.axis == axis and composed.hydra.sweeper.params[axis] == rows
    assert cfg.recipe.epochs == cfg.scale.tables[cfg.experiment.table].epochs
    if experiment == "htr_ablation_pos_embed":  # tested on lines longer than any training line
        assert cfg.data.test_min_chars > cfg.data.max_chars


def test_htr_report_gives_cer_and_wer_per_row_over_seeds(tmp_path, capsys):
    """The old address of the handwriting report is the tables' report (the rest: integration/test_htr_tables.py)."""
    from cvt_lab.htr.report import main
    from cvt_lab.results import RunRecord, write_record

    sweep = tmp_path / "htr_pos_embed_cpu"
    for row, cers in (("none", (0.02, 0.04)), ("every", (0.10, 0.20))):
        for seed, cer in enumerate(cers):
            job = sweep / f"model/pos_embed={row},seed={seed}".replace("/", "_")
            job.mkdir(parents=True)
            write_record(job, RunRecord(status="finished", seed=seed, test_cer=cer, test_wer=2 * cer,
                                        experiment={"table": "htr_pos_embed", "row": row}))
    out = tmp_path / "reports"
    assert main([str(sweep), "--out", str(out), "--prereg-dir", str(tmp_path / "no-prereg")]) == 0
    text = capsys.readouterr().out
    assert "| 3.00 +/- 1.41 | 2 | 6.00 +/- 2.83 |" in text and "**Exploratory" in text
    assert (out / "htr_pos_embed.md").is_file()


def test_sample_lines_go_to_wandb_as_an_image(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    from cvt_lab.htr.samples import log_samples, save_samples

    logged = {}
    monkeypatch.setattr(WandbLogger, "log_image", lambda self, key, images, **kw: logged.update({key: images}))
    path = save_samples([(torch.rand(1, 32, 80), "12", "13"), (torch.rand(1, 32, 50), "4", "4")], tmp_path / "s.png")
    log_samples(CSVLogger(tmp_path), path)
    assert logged == {} and path.stat().st_size > 0
    log_samples(WandbLogger(offline=True, save_dir=str(tmp_path)), path)
    assert logged == {"test/samples": [str(path)]}
