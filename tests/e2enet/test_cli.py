import json

import nibabel as nib
import numpy as np
import pytest

from e2enet import data
from jaxrepro import cli
from jaxrepro.data import shared_data_dir

TOTALSEG = shared_data_dir() / data.TOTALSEG


def test_count_reports_paper_parameter_counts(tmp_path, capsys):
  out = tmp_path / "count.json"
  assert cli.main(["e2enet", "count", "--json", str(out)]) == 0
  report = json.loads(out.read_text())
  counts = report["metrics"]["counts"]
  assert counts["e2enet"]["dense"] == 23_899_088
  assert all(report["metrics"]["matches_paper"].values())
  assert counts["e2enet-noshift"]["dense"] == counts["e2enet"]["dense"]
  assert counts["unet"]["dense"] > counts["e2enet"]["dense"]
  assert {"command", "config", "data", "metrics", "timings", "env"} <= set(report)
  assert "23.899M" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["e2enet", "train", "--sparsity", "1.5"], "--sparsity"),
    (["e2enet", "train", "--steps", "0"], "--steps"),
    (["e2enet", "train", "--data", "/nonexistent/folder"], "--data"),
    (["e2enet", "predict", "--ckpt", "/nonexistent", "--image", "x.nii.gz", "--out", "p.txt"],
     ".nii"),
    (["e2enet", "predict", "--ckpt", "/nonexistent", "--image", "x.nii.gz", "--out", "p.nii.gz"],
     "e2enet_config.json"),
])
def test_bad_input_gives_a_clear_error(argv, message, capsys):
  assert cli.main(argv) == 2
  assert message in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not (TOTALSEG / data.CT_IMAGE).exists(), reason="real CT absent")
def test_train_then_predict_writes_nifti_with_the_image_affine(tmp_path):
  ckpt = tmp_path / "ckpt"
  assert cli.main(["--quiet", "e2enet", "train", "--steps", "2", "--patch", "8", "32", "32",
                   "--base-channels", "4", "--ckpt", str(ckpt), "--json",
                   str(tmp_path / "train.json"), "--out", str(tmp_path / "plots")]) == 0
  report = json.loads((tmp_path / "train.json").read_text())
  assert report["data"].endswith("totalsegmentator") and len(report["metrics"]["dice_per_class"]) == 15
  assert (tmp_path / "plots" / "e2enet_train_loss.png").exists()
  pred_path = tmp_path / "pred.nii.gz"
  assert cli.main(["--quiet", "e2enet", "predict", "--ckpt", str(ckpt), "--image",
                   str(TOTALSEG / data.CT_IMAGE), "--label", str(TOTALSEG / data.CT_LABEL),
                   "--out", str(pred_path), "--json", str(tmp_path / "pred.json")]) == 0
  image, pred = nib.load(str(TOTALSEG / data.CT_IMAGE)), nib.load(str(pred_path))
  np.testing.assert_array_equal(pred.affine, image.affine)
  assert pred.shape == image.shape
  values = set(np.unique(np.asanyarray(pred.dataobj)).tolist())
  run = json.loads((ckpt / "e2enet_config.json").read_text())
  assert values <= {0, *run["label_values"]}
