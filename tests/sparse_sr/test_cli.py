"""``jaxrepro speech make-corpus | train | eval`` end to end, and clear errors."""

import json

import pytest

from jaxrepro.cli import main


@pytest.mark.slow
def test_make_corpus_train_eval(tmp_path, capsys):
  corpus_dir = tmp_path / "corpus"
  assert main(["--quiet", "speech", "make-corpus", "--kind", "espeak", "--out", str(corpus_dir),
               "--hours", "0.002", "--test-utterances", "2", "--vocab-size", "20",
               "--no-video", "--json", str(tmp_path / "corpus.json")]) == 0
  made = json.loads((tmp_path / "corpus.json").read_text())
  assert made["data"].startswith("embedded:espeak-ng")
  assert made["metrics"]["test"]["utterances"] == 2
  run = tmp_path / "run"
  assert main(["--quiet", "speech", "train", "--data", str(corpus_dir), "--model",
               "conformer-nano", "--steps", "2", "--batch-size", "2", "--eval-every", "2",
               "--vtlp", "0.1", "--tempo", "0.1", "--n-mels", "40", "--spec-augment", "off",
               "--workdir", str(run), "--out", str(tmp_path / "out"),
               "--json", str(tmp_path / "train.json")]) == 0
  report = json.loads((tmp_path / "train.json").read_text())
  assert report["metrics"]["steps"] == 2
  assert report["config"]["model"]["vtlp_warp"] == 0.1
  assert report["config"]["model"]["tempo_change"] == 0.1
  assert report["config"]["model"]["features"]["n_mels"] == 40
  assert report["config"]["model"]["spec_augment"] is None
  assert report["config"]["train"]["ctc_weight"] == 0.1   # Auto-AVSR's without --quick
  assert report["metrics"]["eval"]["test"]["utterances"] == 2
  assert (tmp_path / "out" / "loss.png").is_file() and (run / "metrics.jsonl").is_file()
  assert main(["--quiet", "speech", "eval", "--ckpt", str(run), "--vtln", "--json",
               str(tmp_path / "eval.json")]) == 0
  evaluated = json.loads((tmp_path / "eval.json").read_text())
  assert evaluated["metrics"]["step"] == 2
  assert set(evaluated["metrics"]["test_vtln"]["vtln"].values()) <= set(
      evaluated["config"]["vtln_warps"])
  # the saved model reproduces the training run's own final evaluation
  assert (evaluated["metrics"]["test"]["greedy_ctc"]
          == report["metrics"]["eval"]["test"]["greedy_ctc"])


def test_bad_inputs_exit_2_with_a_message(tmp_path, capsys):
  assert main(["speech", "train", "--data", str(tmp_path / "nowhere")]) == 2
  assert "nowhere" in capsys.readouterr().err
  assert main(["speech", "eval", "--ckpt", str(tmp_path)]) == 2
  assert "config.json" in capsys.readouterr().err
  assert main(["speech", "train", "--data", str(tmp_path), "--model", "conformer-huge"]) == 2
  assert "conformer-huge" in capsys.readouterr().err
  assert main(["speech", "train", "--data", str(tmp_path), "--lifter", "22"]) == 2
  assert "--mfcc" in capsys.readouterr().err
  assert main(["speech", "train", "--data", str(tmp_path), "--mfcc", "81"]) == 2
  assert "--mfcc" in capsys.readouterr().err
  assert main(["speech", "train", "--data", str(tmp_path), "--steps", "-5"]) == 2
  assert "--steps" in capsys.readouterr().err


def test_bad_sparse_and_pruning_flags_exit_2(tmp_path, capsys):
  for flags, message in ((["--keep", "0"], "--keep"), (["--sparsity", "1.5"], "--sparsity"),
                         (["--drop", "1"], "--drop"),
                         (["--reselect-every", "-1"], "--reselect-every"),
                         (["--reselect-every", "5"], "--prune"),
                         (["--anneal-epochs", "1"], "--prune"),
                         (["--prune-warmup-epochs", "0"], "--prune"),
                         (["--prune", "hard", "--prune-warmup-epochs", "-1"],
                          "--prune-warmup-epochs"),
                         (["--prune", "easy", "--anneal-epochs", "1", "--reselect-every",
                           "5"], "per-epoch"),
                         (["--modality", "video", "--time-drop", "chunk"], "audio-only"),
                         (["--modality", "video", "--speaker-cmvn"], "--speaker-cmvn"),
                         (["--adaptation-takes", "0"], "--adaptation-takes")):
    assert main(["speech", "train", "--data", str(tmp_path)] + flags) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_train_with_msrs_and_data_pruning(tmp_path, capsys):
  corpus_dir = tmp_path / "corpus"
  assert main(["--quiet", "speech", "make-corpus", "--kind", "espeak", "--out", str(corpus_dir),
               "--hours", "0.003", "--test-utterances", "2", "--vocab-size", "20",
               "--no-video"]) == 0
  assert main(["--quiet", "speech", "train", "--data", str(corpus_dir), "--model",
               "conformer-nano", "--steps", "4", "--batch-size", "2", "--sparse", "msrs",
               "--msrs-switch", "dense", "--prune", "easy", "--keep", "0.5",
               "--time-drop", "chunk", "--drop", "0.3", "--time-drop-domain", "features",
               "--workdir", str(tmp_path / "run"),
               "--json", str(tmp_path / "train.json")]) == 0
  report = json.loads((tmp_path / "train.json").read_text())
  assert report["config"]["sparse"]["switch"] == "dense"
  assert report["config"]["prune"] == "easy" and report["config"]["time_drop"] == "chunk"
  assert report["config"]["time_drop_domain"] == "features"
  assert report["metrics"]["msrs_stable_step"] == -1  # 4 steps: too early to be stable


@pytest.mark.parametrize("flags, warmup", [([], 1), (["--prune-warmup-epochs", "0"], 0),
                                           (["--prune-warmup-epochs", "2"], 2)])
def test_prune_warmup_epochs_reach_the_sampler(flags, warmup):
  import argparse

  import optax

  from sparse_sr.cli import (add_sparse_and_pruning_args, check_sparse_and_pruning_args,
                             sparse_and_pruning)
  parser = argparse.ArgumentParser()
  add_sparse_and_pruning_args(parser)
  parser.add_argument("--modality", default="audio")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(["--prune", "hard", "--keep", "0.7"] + flags)
  check_sparse_and_pruning_args(args)
  _, _, sampler, _, config = sparse_and_pruning(args, optax.sgd(0.1), 100, 300, 8, 8)
  assert sampler.warmup_epochs == config["prune_warmup_epochs"] == warmup
  # the first selection keeps everything only during a warm-up
  assert len(sampler.epoch_order(0)) == (300 if warmup else 210)


def test_reports_say_which_data_on_stderr_and_keep_stdout_json(capsys):
  import argparse

  from jaxrepro.bench import Report
  from sparse_sr.cli import _write
  _write(Report("speech-eval", "jaxrepro speech eval", data="embedded:espeak-ng corpus",
                metrics={"step": 2}, env={}), argparse.Namespace(json=None, out=None))
  captured = capsys.readouterr()
  assert "data: embedded:espeak-ng corpus" in captured.err
  assert json.loads(captured.out) == {"step": 2}


def test_train_shows_progress_while_synthesizing_its_default_corpus(tmp_path, monkeypatch):
  from sparse_sr.data import corpus

  class Synthesizing(Exception):
    """Ends training at the corpus synthesis, carrying the progress bar it was given."""

  def recording_synthesis(out_dir, config, progress_bar=None):
    raise Synthesizing(progress_bar)
  monkeypatch.setattr(corpus, "make_espeak_corpus", recording_synthesis)
  with pytest.raises(Synthesizing) as synthesis:
    main(["--quiet", "speech", "train", "--quick", "--out", str(tmp_path)])
  assert synthesis.value.args[0] is not None  # a progress bar was handed to the synthesizer
