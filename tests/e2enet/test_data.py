import nibabel as nib
import numpy as np
import pytest

from e2enet import data
from jaxrepro.data import shared_data_dir

TOTALSEG = shared_data_dir() / data.TOTALSEG


def _write(path, array, affine=None):
  affine = np.diag([1.5, 1.0, 3.0, 1.0]) if affine is None else affine
  nib.save(nib.Nifti1Image(array, affine), str(path))
  return path


def test_nifti_round_trip_keeps_affine_and_orientation(tmp_path):
  raw = np.random.default_rng(0).integers(0, 5, size=(6, 5, 4)).astype(np.int16)
  affine = np.asarray([[0, -1.5, 0, 10], [2.0, 0, 0, -3], [0, 0, 3.0, 7], [0, 0, 0, 1]])
  src = _write(tmp_path / "a.nii.gz", raw, affine)
  array, got_affine, spacing = data.load_nifti(src)
  assert array.shape == (4, 5, 6) and array[3, 2, 1] == raw[1, 2, 3]    # (z, y, x)
  np.testing.assert_array_equal(got_affine, affine)
  assert spacing == (3.0, 1.5, 2.0)
  out = data.save_nifti(tmp_path / "b.nii.gz", array, got_affine)
  back = nib.load(str(out))
  np.testing.assert_array_equal(np.asanyarray(back.dataobj), raw)
  np.testing.assert_array_equal(back.affine, affine)


def test_malformed_or_mismatched_pairs_give_clear_errors(tmp_path):
  image = _write(tmp_path / "img.nii.gz", np.zeros((6, 5, 4), np.float32))
  with pytest.raises(ValueError, match="shape"):
    data.load_case(image, _write(tmp_path / "l1.nii.gz", np.zeros((6, 5, 3), np.uint8)))
  with pytest.raises(ValueError, match="affines"):
    data.load_case(image, _write(tmp_path / "l2.nii.gz", np.zeros((6, 5, 4), np.uint8),
                                 np.diag([1.0, 1.0, 1.0, 1.0])))
  with pytest.raises(ValueError, match="integers"):
    data.load_case(image, _write(tmp_path / "l3.nii.gz", np.full((6, 5, 4), 0.5, np.float32)))
  with pytest.raises(ValueError, match="3D"):
    data.load_case(_write(tmp_path / "4d.nii.gz", np.zeros((3, 3, 3, 2), np.float32)))
  with pytest.raises(FileNotFoundError):
    data.load_case(tmp_path / "missing.nii.gz")
  (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti")
  with pytest.raises(ValueError, match="NIfTI"):
    data.load_case(tmp_path / "junk.nii.gz")


def test_ct_normalization_clips_foreground_percentiles_then_zscores():
  rng = np.random.default_rng(0)
  image = rng.normal(40, 300, size=(8, 8, 8))
  fg = image > 0
  lo, hi = np.percentile(image[fg], [0.5, 99.5])
  inside = np.clip(image[fg], lo, hi)
  expected = (np.clip(image, lo, hi) - inside.mean()) / inside.std()
  np.testing.assert_allclose(data.normalize(image, "CT", fg), expected, rtol=1e-4, atol=1e-5)
  mr = data.normalize(image, "MR")
  assert abs(mr.mean()) < 1e-5 and mr.std() == pytest.approx(1.0, rel=1e-5)
  with pytest.raises(ValueError, match="modality"):
    data.normalize(image, "PET")


def test_patch_sampling_oversamples_foreground_and_pads():
  label = np.zeros((6, 40, 40), np.int32)
  label[2:4, 30:33, 5:8] = 2
  case = data.Case(np.zeros((6, 40, 40, 1), np.float32), label, (1, 1, 1), np.eye(4))
  rng = np.random.default_rng(0)
  hits = 0
  for _ in range(20):
    images, labels = data.sample_batch(rng, [case], (8, 16, 16), 3, augmentation=False)
    assert images.shape == (3, 8, 16, 16, 1) and labels.shape == (3, 8, 16, 16)
    assert (labels[-1] == 2).any()                 # the last third is foreground-centred
    hits += int((labels[0] == 2).any())
  assert hits < 20
  images, labels = data.sample_batch(rng, [case], (8, 16, 16), 2)
  assert set(np.unique(labels)) <= {0, 2} and images.dtype == np.float32


@pytest.mark.skipif(not (TOTALSEG / data.CT_IMAGE).exists(),
                    reason="real CT absent: ../shared/data/medical/totalsegmentator not found")
def test_real_ct_case_loads_with_16_classes():
  case = data.load_case(TOTALSEG / data.CT_IMAGE, TOTALSEG / data.CT_LABEL, num_classes=16)
  assert case.image.shape == (30, 101, 122, 1) and case.spacing == (3.0, 3.0, 3.0)
  assert set(np.unique(case.label)) == set(range(16))
  raw = np.transpose(np.asanyarray(nib.load(str(TOTALSEG / data.CT_LABEL)).dataobj), (2, 1, 0))
  for i, value in enumerate(case.label_values):
    np.testing.assert_array_equal(case.label == i + 1, raw == value)
  assert case.label_values[0] == 5          # the most frequent TotalSegmentator label (liver)


def test_embedded_mni_tissue_case():
  case = data.mni_tissue_case()
  assert case.image.shape == (95, 117, 99, 1) and case.spacing == (2.0, 2.0, 2.0)
  assert set(np.unique(case.label)) == {0, 1, 2}
  assert 0.05 < (case.label == 1).mean() < 0.4 and 0.05 < (case.label == 2).mean() < 0.4


def test_resample_to_target_spacing():
  label = np.zeros((4, 6, 6), np.int32)
  label[1:3, 2:5, 1:4] = 7
  assert data.resample(label, (3.0, 1.0, 1.0), (1.5, 2.0, 1.0), order=0).shape == (8, 3, 6)
  # Nearest-neighbour upsampling by an integer factor (voxel-centre grid) repeats slices.
  out = data.resample(label, (3.0, 1.0, 1.0), (1.5, 1.0, 1.0), order=0)
  np.testing.assert_array_equal(out, np.repeat(label, 2, axis=0))
  assert data.resample(label, (1, 1, 1), (1, 1, 1), order=3) is label
