import json

import pytest

from graph_al.datasets import karate_graph
from graph_al.spa import spa_query
from jaxrepro import cli


def test_select_writes_report_on_embedded_karate(tmp_path, capsys):
  out = tmp_path / "select.json"
  assert cli.main(["graph", "select", "--data", "karate", "--strategy", "spa", "--budget", "6",
                   "--json", str(out)]) == 0
  report = json.loads(out.read_text())
  assert report["data"]["source"] == "embedded:karate"
  selected = report["metrics"]["selected"]
  assert len(selected) == len(set(selected)) == 6
  assert sum(report["metrics"]["class_counts"]) == 6
  assert "spa selected 6 of 34" in capsys.readouterr().out
  assert cli.main(["graph", "select", "--data", "karate", "--strategy", "spa", "--budget", "2",
                   "--spa-head-order", "size", "--json", str(out)]) == 0
  expected = spa_query(karate_graph(), 2, head_order="size").selected
  assert json.loads(out.read_text())["metrics"]["selected"] == expected.tolist()
  assert cli.main(["graph", "select", "--data", "karate", "--strategy", "spa", "--budget", "4",
                   "--eps", "auto", "--count-self", "--json", str(out)]) == 0
  report = json.loads(out.read_text())
  assert report["config"]["query"]["eps"] == "auto" and report["config"]["query"]["count_self"]
  expected = spa_query(karate_graph(), 4, eps="auto", count_self=True).selected
  assert report["metrics"]["selected"] == expected.tolist()
  assert cli.main(["graph", "select", "--data", "karate", "--strategy", "spa", "--budget", "9",
                   "--eps", "0.3", "--mu", "2", "--scan-semantics", "paper", "--spa-pagerank",
                   "paper", "--json", str(out)]) == 0
  report = json.loads(out.read_text())
  assert report["config"]["query"]["scan_semantics"] == "paper"
  assert report["config"]["query"]["spa_pagerank"] == "paper"
  expected = spa_query(karate_graph(), 9, eps=0.3, mu=2, semantics="paper", pagerank="paper")
  assert report["metrics"]["selected"] == expected.selected.tolist()
  assert expected.selected.tolist() != spa_query(karate_graph(), 9, eps=0.3, mu=2).selected.tolist()


def test_run_writes_table_and_plot(tmp_path, capsys):
  out = tmp_path / "run.json"
  assert cli.main(["graph", "run", "--data", "sbm", "--strategies", "spa,random",
                   "--budgets", "5,10", "--seeds", "2", "--epochs", "5", "--json", str(out),
                   "--out", str(tmp_path)]) == 0
  report = json.loads(out.read_text())
  table = report["metrics"]["table"]
  assert set(table) == {"spa", "random"}
  for rows in table.values():
    assert set(rows) == {"5", "10"}
    assert all(0 <= r["macro_f1_mean"] <= 100 and len(r["macro_f1_per_seed"]) == 2
               for r in rows.values())
  assert (tmp_path / "graph_run_sbm.png").stat().st_size > 0
  assert "macro-F1" in capsys.readouterr().out


def test_bad_input_gives_exit_code_2(capsys):
  assert cli.main(["graph", "run", "--data", "karate", "--strategies", "coreset"]) == 2
  assert "unknown strategies" in capsys.readouterr().err
  assert cli.main(["graph", "select", "--data", "karate", "--budget", "50"]) == 2
  assert "budget" in capsys.readouterr().err
  assert cli.main(["graph", "select", "--data", "karate", "--eps", "1.5"]) == 2
  assert "eps" in capsys.readouterr().err
  assert cli.main(["graph", "select", "--data", "karate", "--scan-semantics", "paper",
                   "--count-self"]) == 2
  assert "count_self" in capsys.readouterr().err
  assert cli.main(["graph", "select", "--data", "karate", "--spa-pagerank", "paper",
                   "--spa-variant", "public"]) == 2
  assert "spa_pagerank" in capsys.readouterr().err
  with pytest.raises(SystemExit) as exit_info:   # argparse's own choices check
    cli.main(["graph", "select", "--data", "karate", "--scan-semantics", "xu"])
  assert exit_info.value.code == 2 and "--scan-semantics" in capsys.readouterr().err


def test_benchmark_help_names_its_modes():
  import subprocess
  import sys
  from pathlib import Path
  root = Path(__file__).resolve().parents[2]
  help_text = subprocess.run([sys.executable, "-m", "benchmarks.bench_graph_al", "--help"],
                             cwd=root, capture_output=True, text=True, check=True).stdout
  assert "--scan-variants" in help_text and "--paper-literal" in help_text
