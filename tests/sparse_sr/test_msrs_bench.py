"""The MSRS benchmark's bookkeeping: method subsets, options, and resumed rows kept apart by
model, seed, modality, learning rate and number of evaluations."""

import json

import pytest

from benchmarks import bench_msrs as bench


def test_methods_subset_in_the_order_given():
  picked = bench.pick_methods(bench.MEDIUM_METHODS, ("msrs-sparse", "dense", "msrs-sparse"))
  assert picked == [("msrs-sparse", "msrs", "sparse"), ("dense", "none", "sparse")]
  assert bench.pick_methods(bench.MEDIUM_METHODS, None) == bench.MEDIUM_METHODS
  with pytest.raises(ValueError, match=r"unknown methods \['set'\]"):
    bench.pick_methods(bench.WORDS_METHODS, ("dense", "set"))  # not one of --words' methods


def _row(size, label, cer, modality="video", **configuration):
  return {"size": size, "modality": modality, "label": label, **configuration,
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
      ("medium", "video", "dense", "conformer-nano", 0, 3e-3, 10): 0.5,
      ("medium", "video", "dense", "conformer-tiny", 0, 3e-3, 10): 0.9,
      ("medium", "video", "dense", "conformer-tiny", 1, 3e-3, 10): 0.6}
  assert "seed" not in done["medium", "video", "dense", "conformer-tiny", 1, 3e-3, 10]


def test_finished_rows_keep_learning_rates_and_modalities_apart(tmp_path):
  path = tmp_path / "msrs_rows.jsonl"
  rows = [_row("medium", "dense", 0.5),  # written before the learning rate was recorded
          _row("medium", "dense", 0.95, learning_rate=1e-2),
          _row("medium", "dense", 0.3, modality="av"),
          _row("full", "dense", 0.2, modality="av"),  # the full size's default is 2e-3
          _row("full", "dense", 0.1, modality="av", learning_rate=3e-3)]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  done = bench.finished_rows(path)
  assert {key: row["final_cer"] for key, row in done.items()} == {
      ("medium", "video", "dense", "conformer-nano", 0, 3e-3, 10): 0.5,
      ("medium", "video", "dense", "conformer-nano", 0, 1e-2, 10): 0.95,
      ("medium", "av", "dense", "conformer-nano", 0, 3e-3, 10): 0.3,
      ("full", "av", "dense", "conformer-tiny", 0, 2e-3, 10): 0.2,
      ("full", "av", "dense", "conformer-tiny", 0, 3e-3, 10): 0.1}
  assert "learning_rate" not in done["medium", "video", "dense", "conformer-nano", 0, 1e-2, 10]
  # an explicit default learning rate is the same configuration as an old row without one
  assert bench.row_key(_row("medium", "dense", 0.5, learning_rate=0.003)) == bench.row_key(
      _row("medium", "dense", 0.5))


class _FakeDataset(list):
  def __init__(self, entries, tokenizer, **uses):
    super().__init__(entries)
    self.uses = uses


def _fake_corpus(monkeypatch, tmp_path):
  from sparse_sr.data import corpus, loader
  monkeypatch.setattr(bench, "make_corpus", lambda size, out_dir: tmp_path)
  monkeypatch.setattr(corpus, "read_manifest", lambda path: [])
  monkeypatch.setattr(loader, "Dataset", _FakeDataset)


def test_resume_reruns_only_the_missing_rows_of_this_configuration(monkeypatch, tmp_path):
  ran = []

  def fake_run_method(method, switch, modality, train_set, test_set, *, model, seed, **_):
    ran.append((method, switch, model, seed))
    return {k: v for k, v in _row("medium", "", 0.3).items()
            if k not in ("size", "modality", "label")}

  _fake_corpus(monkeypatch, tmp_path)
  monkeypatch.setattr(bench, "run_method", fake_run_method)
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


def test_learning_rate_and_modality_runs_apart_from_the_default_ones(monkeypatch, tmp_path):
  ran = []

  def fake_run_method(method, switch, modality, train_set, test_set, *, learning_rate, **_):
    ran.append((method, switch, modality, learning_rate, train_set.uses["use_audio"]))
    return {k: v for k, v in _row("medium", "", 0.4).items()
            if k not in ("size", "modality", "label")}

  _fake_corpus(monkeypatch, tmp_path)
  monkeypatch.setattr(bench, "run_method", fake_run_method)
  path = tmp_path / "msrs_rows.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in [
      _row("medium", "dense", 0.5),  # video, the size's 3e-3: neither is reused below
      _row("medium", "dense", 0.95, modality="av", learning_rate=1e-2),
      _row("medium", "dense", 0.9, modality="av", learning_rate=3e-3)]))
  report = bench.run(False, tmp_path, size="medium", resume=True, modalities=("av",),
                     learning_rate=1e-2, method_labels=("dense", "msrs-sparse"))
  assert ran == [("msrs", "sparse", "av", 1e-2, True)]
  assert list(report.metrics) == ["av"]
  assert report.metrics["av"]["runs"]["dense"]["final_cer"] == 0.95
  assert report.config["learning_rate"] == 1e-2 and report.config["modalities"] == ["av"]
  appended = json.loads(path.read_text().splitlines()[-1])
  assert (appended["label"], appended["modality"], appended["learning_rate"]) == (
      "msrs-sparse", "av", 1e-2)
  assert report.command.endswith("--medium --methods dense,msrs-sparse --modalities av "
                                 "--learning-rate 0.01")
  ran.clear()  # the defaults: video only, the size's learning rate; its dense row is reused
  report = bench.run(False, tmp_path, size="medium", resume=True, method_labels=("dense",))
  assert ran == [] and list(report.metrics) == ["video"]
  assert report.metrics["video"]["runs"]["dense"]["final_cer"] == 0.5
  assert report.config["learning_rate"] == 3e-3


def test_full_size_trains_both_models_by_default():
  assert bench.pick_modalities("full", None) == ("video", "av")
  assert bench.pick_modalities("medium", None) == ("video",)
  assert bench.pick_modalities("medium", ("av", "video", "av")) == ("av", "video")


@pytest.mark.parametrize("options, message", [
    (dict(modalities=("audio",)), r"unknown modalities \['audio'\]"),
    (dict(modalities=()), "unknown modalities"),
    (dict(learning_rate=0.0), "must be positive"),
    (dict(learning_rate=-1e-3), "must be positive"),
    (dict(learning_rate=float("nan")), "must be positive"),
    (dict(evals=0), "--evals must be between 1 and the 200 steps"),
    (dict(evals=201), "--evals must be between 1 and the 200 steps")])
def test_bad_modalities_and_learning_rates_raise(monkeypatch, tmp_path, options, message):
  monkeypatch.setattr(bench, "make_corpus", lambda size, out_dir: pytest.fail("ran"))
  with pytest.raises(ValueError, match=message):
    bench.run(False, tmp_path, size="medium", **options)


def test_options_reach_run(monkeypatch):
  seen = {}
  monkeypatch.setattr(bench, "benchmark_main",
                      lambda fn, description, rest: seen.update(fn.keywords, rest=rest))
  bench._main(["--medium", "--model", "conformer-tiny", "--seed", "1", "--methods",
               "dense,msrs-sparse", "--modalities", "video,av", "--learning-rate", "1e-2",
               "--evals", "20", "--resume", "--out", "x"])
  assert seen == {"size": "medium", "resume": True, "model": "conformer-tiny", "seed": 1,
                  "method_labels": ("dense", "msrs-sparse"), "modalities": ("video", "av"),
                  "learning_rate": 1e-2, "evals": 20, "rest": ["--out", "x"]}


def test_evaluation_counts_run_apart_and_set_the_evaluation_interval(monkeypatch, tmp_path):
  ran = []

  def fake_run_method(method, switch, modality, train_set, test_set, *, evals, steps, **_):
    ran.append((method, evals, steps))
    return {k: v for k, v in _row("medium", "", 0.4).items()
            if k not in ("size", "modality", "label")}

  _fake_corpus(monkeypatch, tmp_path)
  monkeypatch.setattr(bench, "run_method", fake_run_method)
  path = tmp_path / "msrs_rows.jsonl"
  path.write_text(json.dumps(_row("medium", "dense", 0.5)) + "\n")  # before evals was recorded
  report = bench.run(False, tmp_path, size="medium", resume=True, evals=20,
                     method_labels=("dense",))
  assert ran == [("none", 20, 200)]  # the 10-evaluation row is not reused for a finer curve
  assert json.loads(path.read_text().splitlines()[-1])["evals"] == 20
  assert report.command.endswith("--medium --methods dense --evals 20")
  assert report.config["evals"] == 20
  ran.clear()
  bench.run(False, tmp_path, size="medium", resume=True, evals=10, method_labels=("dense",))
  assert ran == []  # an explicit default is the old row's configuration
  assert bench.row_key(_row("medium", "dense", 0.5, evals=20)) != bench.row_key(
      _row("medium", "dense", 0.5))


def _timed_row(cers, seconds, steady):
  curve = [{"step": 10 * (i + 1), "seconds": t, "steady_seconds": u, "cer": c, "wer": 1.0}
           for i, (c, t, u) in enumerate(zip(cers, seconds, steady))]
  return {"curve": curve, "final_cer": cers[-1], "seconds": seconds[-1],
          "steady_seconds": steady[-1]}


def test_verdict_judges_real_time_and_reports_the_time_without_compilation():
  rows = {"dense": _timed_row([0.9, 0.8, 0.7, 0.6], [30, 40, 50, 60], [0, 9, 18, 27]),
          "msrs-sparse": _timed_row([0.9, 0.55, 0.5, 0.4], [50, 62, 72, 82], [0, 11, 20, 29]),
          "msrs-dense": _timed_row([0.9, 0.8, 0.7, 0.65], [40, 50, 60, 70], [0, 9, 18, 27])}
  verdict = bench.verdict(rows)
  sparse = verdict["msrs-sparse"]
  # first reaches dense's 0.6 at step 20: 62 s of dense's 60 s with compilation, 11 of 27 without
  assert sparse["seconds_to_dense_cer"] == 62 and sparse["fraction_of_dense_steps"] == 0.5
  assert sparse["fraction_of_dense_time"] == pytest.approx(62 / 60)
  assert sparse["fraction_of_dense_steady_time"] == pytest.approx(11 / 27)
  assert not sparse["half_time_target_met"]  # judged with compilation included
  assert verdict["msrs-dense"]["fraction_of_dense_steady_time"] is None  # never reached it
  # rows recorded before steady seconds were: no steady fraction, the rest unchanged
  old = {label: {**row, "curve": [{k: v for k, v in p.items() if k != "steady_seconds"}
                                  for p in row["curve"]]} for label, row in rows.items()}
  assert bench.verdict(old)["msrs-sparse"]["fraction_of_dense_steady_time"] is None
  assert bench.verdict(old)["msrs-sparse"]["fraction_of_dense_time"] == pytest.approx(62 / 60)
