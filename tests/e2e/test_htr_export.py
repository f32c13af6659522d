"""Handwriting beyond training: line recognizers exported to ONNX with a dynamic width (checked with onnxruntime),
``mode=eval`` / ``mode=predict`` with the charset of the checkpoint, the sample lines in W&B, pre-trained CvT weights
of every format in the backbone, and the paper-scale plan of the handwriting ablations."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config, run_cli, shared_dir, wandb_records
from hf_fixtures import REPO, hf_config, hf_model
from PIL import Image

from cvt_lab.htr import build_crnn, build_cvt_line_recognizer
from cvt_lab.htr.module import LineRecognizer, load_line_recognizer

onnx = pytest.importorskip("onnx", reason="the onnx extra")
onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra")

HTR_TINY = ("experiment=htr", "data.source=sklearn", "data.train_lines=48", "data.val_lines=8", "data.test_lines=8",
            "recipe.batch_size=16", "recipe.epochs=1", "trainer.enable_progress_bar=false", "model.depths=[1,1,1]",
            "model.dims=[16,32,32]", "model.heads=[1,2,2]")
MODELS = {"htr_cvt": ("model=htr_cvt",), "htr_crnn": ("model=htr_crnn", "model.crnn_dims=[8,8,16,16]",
                                                       "model.rnn_hidden=16")}
TOLERANCE = 1e-4


def _train(path: Path, *overrides: str) -> None:
    from cvt_lab.job import run

    assert run(compose_config(*overrides), path, overrides=list(overrides)).status == "finished"


@pytest.fixture(scope="session")
def htr_runs(tmp_path_factory, worker_id) -> dict[str, Path]:
    """A finished one-epoch run of each line recognizer on digit_lines (in-process): model name -> run directory."""
    return {name: shared_dir(tmp_path_factory, worker_id, f"htr_run_{name}",
                             lambda path, o=overrides: _train(path, *HTR_TINY, *o))
            for name, overrides in MODELS.items()}


def lines(widths: list[int], height: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random lines right-padded with background (0) to the widest: (B, 1, height, W) and their widths."""
    rng = np.random.default_rng(seed)
    images = np.zeros((len(widths), 1, height, max(widths)), np.float32)
    for i, w in enumerate(widths):
        images[i, :, :, :w] = rng.random((1, height, w), dtype=np.float32)
    return images, np.array(widths, np.int64)


# ------------------------------------------------------------------------------------------------ ONNX


@pytest.mark.parametrize("name", list(MODELS))
def test_export_cli_writes_onnx_with_dynamic_batch_and_width_and_the_charset(htr_runs, tmp_path, name, capsys):
    from cvt_lab.checkpoint import main

    out = tmp_path / "lines.onnx"
    assert main(["export", str(htr_runs[name]), "--to", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (onnx)" in printed and "batch of" in printed  # the export's own onnxruntime check

    recognizer = load_line_recognizer(htr_runs[name] / "checkpoints" / "last.ckpt")
    graph = onnx.load(str(out))
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*graph.graph.input, *graph.graph.output]}
    assert dims["images"] == ["batch", 1, 32, "width"] and dims["widths"] == ["batch"]
    assert dims["logits"][0] == "batch" and isinstance(dims["logits"][1], str)  # frames follow the width
    assert dims["logits"][2] == len(recognizer.charset.chars) + 1 and dims["frames"] == ["batch"]
    meta = {p.key: json.loads(p.value) for p in graph.metadata_props}
    beside = json.loads(out.with_suffix(".charset.json").read_text())
    assert meta["cvt_lab.charset"] == beside["charset"] == list("0123456789 ") == recognizer.charset.chars
    assert meta["cvt_lab.line_height"] == beside["line_height"] == 32 and beside["blank"] == 0

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for widths in ([83], [211], [211, 83]):  # two widths alone, then both in one padded batch
        images, lengths = lines(widths, seed=len(widths))
        logits, frames = session.run(None, {"images": images, "widths": lengths})
        with torch.no_grad():
            reference = recognizer(torch.from_numpy(images), torch.from_numpy(lengths))
        expected_frames = recognizer.model.frame_widths(torch.from_numpy(lengths))
        assert frames.tolist() == expected_frames.tolist() and logits.shape == tuple(reference.shape)
        assert np.abs(logits - reference.numpy()).max() < TOLERANCE, widths
        decoded = recognizer.charset.greedy(torch.from_numpy(logits), torch.from_numpy(frames))
        assert decoded == recognizer.charset.greedy(reference, expected_frames)


# Every option of the ablated axes in one model (one export: each takes seconds), stage by stage: a patch / a
# convolutional token embedding, keys and values at stride 1 / 2, a linear / a convolutional projection, and a
# position embedding everywhere (a table resized to each line's width) with a class token in the last stage.
EVERY_AXIS = {"pos_embed": [True, True, True], "cls_token": [False, False, True],
              "embed_type": ["patch", "conv", "patch"], "kv_stride": [1, 2, 1], "proj": ["linear", "dw_bn", "dw_bn"]}


def test_every_cvt_axis_exports_with_a_symbolic_width(tmp_path):
    from cvt_lab.htr.export import export_line_onnx

    config = {"_target_": "cvt_lab.htr.build_cvt_line_recognizer", "name": "htr_cvt", "img_size": 32, "in_chans": 1,
              "depths": [1, 1, 1], "dims": [16, 32, 32], "heads": [1, 2, 2], "embed_kernel": [7, 3, 3],
              "embed_stride": [4, 2, 1], "embed_padding": [2, 1, 1], **EVERY_AXIS}
    recognizer = LineRecognizer(None, {"name": "htr"}, list("ab "), config).eval()
    for stage in recognizer.model.backbone.stages:  # a position embedding of real magnitude
        if stage.pos_embed is not None:
            torch.nn.init.normal_(stage.pos_embed, std=0.5)
    out, diffs = export_line_onnx(recognizer, tmp_path / "variant.onnx")
    assert len(diffs) == 3 and max(diffs.values()) < TOLERANCE, diffs


def test_export_of_a_line_recognizer_refuses_other_formats_and_existing_files(htr_runs, tmp_path, capsys):
    from cvt_lab.checkpoint import main

    run = str(htr_runs["htr_crnn"])
    assert main(["export", run, "--to", "safetensors", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "a line recognizer exports to ONNX" in capsys.readouterr().err
    (tmp_path / "y.charset.json").write_text("{}")
    assert main(["export", run, "--to", "onnx", "--out", str(tmp_path / "y.onnx")]) == 2
    err = capsys.readouterr().err
    assert "y.charset.json exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1


def test_bicubic_weights_resample_as_interpolate_each_row_to_its_own_size():
    from cvt_lab.models.layers import bicubic_weights

    table = torch.randn(3, 7)
    weights = bicubic_weights(torch.tensor([7, 13, 4, 1]), 7, 20)
    for row, size in enumerate((7, 13, 4, 1)):
        reference = F.interpolate(table[None, :, None, :], size=(1, size), mode="bicubic", align_corners=False)
        ours = weights[row] @ table.T
        torch.testing.assert_close(ours[:size].T, reference[0, :, 0], atol=1e-5, rtol=1e-5)
        assert not ours[size:].any()  # zero over the padding
    assert torch.equal(weights[0, :7], torch.eye(7))  # its own size: the table itself, exactly


def test_the_exportable_lstm_layer_matches_the_packed_one():
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from cvt_lab.htr.model import LSTM_WEIGHTS, bilstm_layer

    crnn = build_crnn(num_classes=5, crnn_dims=[8, 8, 8, 8], rnn_hidden=6).eval()
    seq, lengths = torch.randn(3, 11, 8), torch.tensor([11, 4, 7])
    with torch.no_grad():
        packed = pack_padded_sequence(seq, lengths, batch_first=True, enforce_sorted=False)
        reference = pad_packed_sequence(crnn.rnn(packed)[0], batch_first=True, total_length=11)[0]
        out = seq
        for layer in range(crnn.rnn.num_layers):
            out = bilstm_layer(out, lengths, *(getattr(crnn.rnn, f"{n}_l{layer}{d}") for d in ("", "_reverse")
                                               for n in LSTM_WEIGHTS))
    torch.testing.assert_close(out, reference, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------------------ eval, predict


def write_lines(root: Path, texts: dict[str, str], splits: dict[str, list[str]]) -> Path:
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for key in texts:
        ink = (rng.random((24, 30 + 10 * len(texts[key]))) > 0.8) * 255
        Image.fromarray((255 - ink).astype(np.uint8)).save(root / "images" / f"{key}.png")  # dark ink on paper
    (root / "transcriptions.txt").write_text("".join(f"{k} {t}\n" for k, t in texts.items()))
    for split, ids in splits.items():
        (root / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


LINES_TINY = ("experiment=htr", "data=lines", "recipe.batch_size=4", "recipe.epochs=1", "model.depths=[1,1,1]",
              "model.dims=[16,32,32]", "model.heads=[1,2,2]", "trainer.enable_progress_bar=false")
SPLITS = {"train": ["a", "b", "c"], "val": ["d"], "test": ["e"]}


@pytest.mark.slow
def test_eval_decodes_with_the_checkpoints_charset_and_refuses_characters_outside_it(tmp_path):
    from cvt_lab.errors import exit_code_of
    from cvt_lab.job import run

    trained = tmp_path / "trained"
    first = write_lines(tmp_path / "first", {"a": "ab", "b": "ba b", "c": "a", "d": "ab", "e": "b a"}, SPLITS)
    _train(trained, *LINES_TINY, f"data.root={first}")
    charset = load_line_recognizer(trained / "checkpoints" / "last.ckpt").charset.chars
    assert charset == [" ", "a", "b"]

    # Another data set whose training split has other characters (its own charset would be ['x', 'y', 'z']): the
    # checkpoint's charset decodes, and its evaluation lines only need to be in that.
    other = write_lines(tmp_path / "other", {"a": "xy", "b": "zz", "c": "y", "d": "ba", "e": "a b"}, SPLITS)
    record = run(compose_config(*LINES_TINY, f"data.root={other}", "mode=eval", f"checkpoint={trained}"),
                 tmp_path / "eval")
    assert record.status == "finished" and record.test_cer is not None and record.image_size == 32

    # A test line with characters the checkpoint cannot transcribe: one message naming them and the fix, exit 2.
    bad = write_lines(tmp_path / "bad", {"a": "ab", "b": "b", "c": "a", "d": "a", "e": "abz é"}, SPLITS)
    proc = run_cli(*LINES_TINY, f"data.root={bad}", "mode=eval", f"checkpoint={trained}",
                   run_dir=tmp_path / "bad_eval", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (message,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert "line 'e' of the test split has character(s) ['z', 'é'] outside the charset of checkpoint=" in message
    assert "(' ab')" in message and "fine-tune it on this data first (mode=train" in message
    with pytest.raises(Exception) as failed:
        run(compose_config(*LINES_TINY, f"data.root={bad}", "mode=eval", f"checkpoint={trained}"), tmp_path / "e2")
    assert exit_code_of(failed.value) == 2


def test_predict_transcribes_every_line_image_of_a_folder_and_skips_an_unreadable_one(htr_runs, tmp_path, caplog):
    from cvt_lab.htr.folder import line_tensor
    from cvt_lab.job import run

    folder = tmp_path / "lines"
    (folder / "page2").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name, width in (("one.png", 140), ("page2/two.jpg", 260)):  # any size: resized to the model's height
        Image.fromarray(255 - ((rng.random((48, width)) > 0.85) * 255).astype(np.uint8)).save(folder / name)
    (folder / "broken.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING):
        # no experiment=htr: the checkpoint says it holds a line recognizer, its model, charset and height
        record = run(compose_config("mode=predict", f"checkpoint={htr_runs['htr_cvt']}", f"predict.input={folder}",
                                    "trainer.enable_progress_bar=false"), tmp_path / "predict")
    assert record.status == "finished" and record.model == "htr_cvt" and record.image_size == 32
    (skipped,) = [r.getMessage() for r in caplog.records if "broken.png" in r.getMessage()]
    assert skipped.startswith(f"unreadable image {folder / 'broken.png'}") and "skipped" in skipped
    with (tmp_path / "predict" / "predictions.csv").open(encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "text"] and [r[0] for r in rows[1:]] == ["one.png", "page2/two.jpg"]
    recognizer = load_line_recognizer(htr_runs["htr_cvt"] / "checkpoints" / "last.ckpt")
    with Image.open(folder / "page2" / "two.jpg") as image:
        line = line_tensor(image.convert("RGB"), 1, 32)
    with torch.no_grad():
        widths = torch.tensor([line.shape[-1]])
        logits = recognizer(line[None], widths)
    assert rows[2][1] == recognizer.charset.greedy(logits, recognizer.model.frame_widths(widths))[0]


def test_a_line_model_refuses_to_predict_with_weights_that_carry_no_charset(tmp_path):
    from cvt_lab.errors import JobError
    from cvt_lab.job import run

    weights = tmp_path / "weights.pth"  # a line recognizer's tensors alone: which class is which character?
    torch.save(build_cvt_line_recognizer(num_classes=12, in_chans=1, depths=[1, 1, 1]).state_dict(), weights)
    with pytest.raises(JobError, match=r"checkpoint=.*weights.pth: not a line recognizer's checkpoint \(none carries "
                                       r"the charset its head decodes to\)") as failed:
        run(compose_config(*HTR_TINY, "mode=predict", f"checkpoint={weights}", f"predict.input={tmp_path}"),
            tmp_path / "predict")
    assert "\n" not in str(failed.value)


# ---------------------------------------------------------------------------------------------- W&B


@pytest.mark.slow
def test_an_htr_run_logs_its_sample_lines_to_wandb(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the wandb extra")
    import wandb

    for key in ("WANDB_API_KEY", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    _train(tmp_path / "run", *HTR_TINY, "logger=wandb", "logger.mode=offline")
    wandb.teardown()  # the W&B service writes the run file in the background: stopping it flushes the file
    (offline,) = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    logged = [{item.nested_key[1]: json.loads(item.value_json) for item in r.history.item
               if list(item.nested_key[:1]) == ["test/samples"]}
              for r in wandb_records(next(offline.glob("*.wandb"))) if r.HasField("history")]
    (samples,) = [entry for entry in logged if entry]  # one image, logged once, at the test's end
    assert samples["_type"] == "images/separated" and samples["count"] == 1
    (png,) = (offline / "files" / "media" / "images" / "test").glob("samples_*.png")
    assert samples["filenames"] == [f"media/images/test/{png.name}"] and png.stat().st_size > 0


# -------------------------------------------------------------------------------- pre-trained weights


def cvt_tiny_args(**overrides) -> dict:
    from cvt_lab.models import load_preset
    from cvt_lab.models.spec import FACTORY_KEYS

    return {k: v for k, v in {**load_preset("cvt_tiny"), **overrides}.items()
            if k not in (*FACTORY_KEYS, "img_size", "num_classes", "in_chans")}


@pytest.mark.parametrize("source", ["released", "timm", "transformers", "hub"])
def test_cvt_weights_of_every_format_load_into_the_backbone_with_a_fresh_ctc_head(tmp_path, request, source):
    """A classifier's weights (RGB, 10 classes) into a grey-scale line recognizer: every backbone tensor from the
    checkpoint (the stem's channels summed), the CTC head left as initialized."""
    from cvt_lab.checkpoint.formats import load_state, to_cvt_lab, to_released
    from cvt_lab.htr.job import load_line_checkpoint

    args = cvt_tiny_args(depths=[1, 2, 3], act="gelu")
    if source in ("released", "timm"):
        import timm

        classifier = timm.create_model("cvt_tiny", num_classes=10, **args)  # cvt_lab's preset, as timm builds it
        state = classifier.state_dict()
        path = tmp_path / ("CvT-tiny.pth" if source == "released" else "timm.pth")
        torch.save(to_released(state) if source == "released" else state, path)
        spec = str(path)
    else:
        transformers = pytest.importorskip("transformers")  # noqa: F841
        if source == "transformers":
            spec = str(tmp_path / "hf")
            hf_model(tmp_path / "hf", hf_config("cvt_tiny", depths=[1, 2, 3]))
        else:
            request.getfixturevalue("hub_cache")
            spec = f"hf-hub:{REPO}"
    expected = {k: v for k, v in to_cvt_lab(load_state(spec)).items() if not k.startswith("head.")}
    model = build_cvt_line_recognizer(num_classes=7, in_chans=1, img_size=32, **args)
    head = model.head.weight.detach().clone()
    assert load_line_checkpoint(model, spec, charset_size=7)
    backbone = model.backbone.state_dict()
    stem = "stages.0.patch_embed.proj.weight"
    torch.testing.assert_close(backbone[stem], expected.pop(stem).sum(1, keepdim=True))
    for key, value in expected.items():
        assert torch.equal(backbone[key], value), key
    assert torch.equal(model.head.weight, head)


def test_a_train_job_starts_from_a_classifier_run_directory_with_a_fresh_head(tmp_path, caplog):
    """``checkpoint=<a classifier's run directory>``: its last checkpoint, into the backbone."""
    from cvt_lab.models import build_cvt

    from omegaconf import OmegaConf

    from cvt_lab.models.spec import FACTORY_KEYS

    model = OmegaConf.to_container(compose_config(*HTR_TINY).model, resolve=True)
    args = {k: v for k, v in model.items() if k not in (*FACTORY_KEYS, "num_classes", "in_chans")}
    classifier = build_cvt(num_classes=10, in_chans=3, **args)
    run_dir = tmp_path / "classifier"
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {f"model.{k}": v for k, v in classifier.state_dict().items()}},
               run_dir / "checkpoints" / "last.ckpt")
    with caplog.at_level(logging.WARNING):
        _train(tmp_path / "lines", *HTR_TINY, f"checkpoint={run_dir}")
    assert any("a fresh CTC head for 12 classes" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------------ plan


@pytest.mark.parametrize(("experiment", "jobs"), [("htr_ablation_pos_embed", 8), ("htr_ablation_conv_embed", 8),
                                                  ("htr_ablation_kv_stride", 4)])
def test_paper_scale_plans_the_handwriting_ablations_on_iam_lines(tmp_path, experiment, jobs):
    from cvt_lab.plan import make_plan

    plan = make_plan([f"experiment={experiment}", "scale=paper", f"paths.output_dir={tmp_path}"])
    assert len(plan["jobs"]) == jobs
    assert all(j["model"] == "htr_cvt13" and j["data"] == "iam_lines" and j["image_size"] == 64
               and j["epochs"] == 100 and j["train_images"] == 100 * 32 * math.ceil(6482 / 32)  # whole batches of 32
               and j["seconds"] > 0 for j in plan["jobs"])
    assert plan["data"] == ["iam_lines: the published size (no copy at data.root=data/iam_lines) (6482 train, "
                            "976 val, 2915 test)"]
    assert plan["summary"]["device"] == "cuda" and plan["summary"]["device_hours"] > 0
    assert all("upper bound" in s or " bf16 on cuda" in s for s in plan["speed"])
    assert not any("model=" in j["job"].replace("model/", "") for j in plan["jobs"])  # names as at CPU scale
