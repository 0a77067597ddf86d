"""The MSRS benchmark's bookkeeping: method subsets, options, and resumed rows kept apart by
model and seed."""

import json

import pytest

from benchmarks import bench_msrs as bench


def test_methods_subset_in_the_order_given():
  picked = bench.pick_methods(bench.MEDIUM_METHODS, ("msrs-sparse", "dense", "msrs-sparse"))
  assert picked == [("msrs-sparse", "msrs", "sparse"), ("dense", "none", "sparse")]
  assert bench.pick_methods(bench.MEDIUM_METHODS, None) == bench.MEDIUM_METHODS
  with pytest.raises(ValueError, match=r"unknown methods \['set'\]"):
    bench.pick_methods(bench.WORDS_METHODS, ("dense", "set"))  # not one of --words' methods


def _row(size, label, cer, **configuration):
  return {"size": size, "modality": "video", "label": label, **configuration,
          "curve": [{"step": 10, "seconds": 1.0, "cer": cer, "wer": 1.0}], "final_cer": cer,
          "final_wer": 1.0, "seconds": 1.0}


def test_finished_rows_keep_models_and_seeds_apart(tmp_path):
  path = tmp_path / "msrs_rows.jsonl"
  rows = [_row("medium", "dense", 0.5),  # written before model and seed were recorded
          _row("medium", "dense", 0.9, model="conformer-tiny", seed=0),
          _row("medium", "dense", 0.7, model="conformer-tiny", seed=1),
          _row("medium", "dense", 0.6, model="conformer-tiny", seed=1)]  # a rerun wins
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  done = bench.finished_rows(path)
  assert {key: row["final_cer"] for key, row in done.items()} == {
      ("medium", "video", "dense", "conformer-nano", 0): 0.5,
      ("medium", "video", "dense", "conformer-tiny", 0): 0.9,
      ("medium", "video", "dense", "conformer-tiny", 1): 0.6}
  assert "seed" not in done["medium", "video", "dense", "conformer-tiny", 1]


class _FakeDataset(list):
  def __init__(self, entries, tokenizer, **uses):
    super().__init__(entries)


def test_resume_reruns_only_the_missing_rows_of_this_configuration(monkeypatch, tmp_path):
  from sparse_sr.data import corpus, loader
  ran = []

  def fake_run_method(method, switch, modality, train_set, test_set, *, model, seed, **_):
    ran.append((method, switch, model, seed))
    return {k: v for k, v in _row("medium", "", 0.3).items()
            if k not in ("size", "modality", "label")}

  monkeypatch.setattr(bench, "make_corpus", lambda size, out_dir: tmp_path)
  monkeypatch.setattr(bench, "run_method", fake_run_method)
  monkeypatch.setattr(corpus, "read_manifest", lambda path: [])
  monkeypatch.setattr(loader, "Dataset", _FakeDataset)
  path = tmp_path / "msrs_rows.jsonl"
  path.write_text(json.dumps(_row("medium", "dense", 0.9, model="conformer-tiny", seed=1))
                  + "\n" + json.dumps(_row("medium", "msrs-dense", 0.2)) + "\n")
  report = bench.run(False, tmp_path, size="medium", resume=True, model="conformer-tiny",
                     seed=1, method_labels=("dense", "msrs-dense"))
  # dense of (tiny, seed 1) is reused; the nano seed-0 msrs-dense row is not
  assert ran == [("msrs", "dense", "conformer-tiny", 1)]
  runs = report.metrics["video"]["runs"]
  assert runs["dense"]["final_cer"] == 0.9 and runs["msrs-dense"]["final_cer"] == 0.3
  verdict = report.metrics["video"]["verdict"]
  assert verdict["dense_failed"] and verdict["msrs-dense"]["trains_where_dense_fails"]
  appended = json.loads(path.read_text().splitlines()[-1])
  assert (appended["label"], appended["model"], appended["seed"]) == (
      "msrs-dense", "conformer-tiny", 1)
  assert report.command.endswith("--medium --model conformer-tiny --seed 1 "
                                 "--methods dense,msrs-dense")
  with pytest.raises(ValueError, match="unknown model"):
    bench.run(False, tmp_path, size="medium", model="conformer-huge")


def test_options_reach_run(monkeypatch):
  seen = {}
  monkeypatch.setattr(bench, "benchmark_main",
                      lambda fn, description, rest: seen.update(fn.keywords, rest=rest))
  bench._main(["--medium", "--model", "conformer-tiny", "--seed", "1", "--methods",
               "dense,msrs-sparse", "--resume", "--out", "x"])
  assert seen == {"size": "medium", "resume": True, "model": "conformer-tiny", "seed": 1,
                  "method_labels": ("dense", "msrs-sparse"), "rest": ["--out", "x"]}
