"""``jaxrepro graph select|run``: SPA queries and the active-learning comparison."""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from jaxrepro.bench import Report
from jaxrepro.cli import add_common_args

DATA_HELP = ("cora, citeseer (Planetoid files under ../shared/data/graphs/planetoid), karate, "
             "sbm (embedded), a gnn-benchmark .npz, or a Planetoid ind.<name>.graph path "
             "(default: cora if present, else the embedded karate club)")
QUICK = {"seeds": 2, "budgets": (20, 40), "epochs": 60}


def _int_list(text: str) -> list[int]:
  try:
    values = [int(v) for v in text.split(",") if v.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
  if not values or min(values) < 1:
    raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
  return values


def _eps(text: str) -> float | str:
  if text == "auto":
    return text
  try:
    return float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}")


def _add_query_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--eps", type=_eps, default=0.5,
                      help="SCAN similarity threshold, or 'auto': the eps of 0.20, 0.21, ..., "
                           "0.80 whose clustering has the highest modularity")
  parser.add_argument("--mu", type=int, default=3, help="SCAN core size")
  parser.add_argument("--count-self", action=argparse.BooleanOptionalAction, default=False,
                      help="count a node among its own eps-neighbours (Xu et al.'s closed "
                           "neighbourhood) or not (cdlib, the public code)")
  parser.add_argument("--scan-semantics", choices=("cdlib", "paper"), default="cdlib",
                      help="SCAN as cdlib / Xu et al. (cores, closed neighbourhoods) or as the "
                           "SPA paper's Eq. 3-4 (an edge links its ends when their open-"
                           "neighbourhood similarity >= eps and they share >= mu neighbours)")
  parser.add_argument("--alpha", type=float, default=0.95, help="PageRank damping")
  parser.add_argument("--spa-variant", choices=("paper", "public"), default="paper",
                      help="Algorithm 1 (paper) or the public notebook's per-community quota")
  parser.add_argument("--spa-head-order", choices=("pagerank", "size"), default="pagerank",
                      help="which community heads Algorithm 1 keeps when communities outnumber "
                           "the budget: highest PageRank, or largest community first")
  parser.add_argument("--spa-singletons", action=argparse.BooleanOptionalAction, default=False,
                      help="Algorithm 1 counts each SCAN hub and outlier as a community of its "
                           "own (else they enter only through the global PageRank fill)")
  parser.add_argument("--spa-pagerank", choices=("global", "paper"), default="global",
                      help="Algorithm 1's PageRank: the whole graph's for heads and fill, or, "
                           "as the paper's steps 5 and 10 read, each community's own for its "
                           "head and that of G minus the heads for the fill")
  parser.add_argument("--model", choices=("gcn", "sage"), default="gcn")
  parser.add_argument("--epochs", type=int, default=300)
  parser.add_argument("--dropout", type=float, default=0.0)


def _configs(args):
  from graph_al.gnn import GNNConfig
  from graph_al.strategies import QueryConfig
  query = QueryConfig(eps=args.eps, mu=args.mu, count_self=args.count_self, alpha=args.alpha,
                      spa_variant=args.spa_variant, spa_head_order=args.spa_head_order,
                      spa_singletons=args.spa_singletons,
                      scan_semantics=args.scan_semantics, spa_pagerank=args.spa_pagerank)
  model = GNNConfig(model=args.model, epochs=args.epochs, dropout=args.dropout)
  return query, model


def _cmd_select(args: argparse.Namespace) -> int:
  from graph_al.datasets import load_graph
  from graph_al.strategies import select_nodes
  graph, source = load_graph(args.data, seed=args.seed)
  query, model = _configs(args)
  start = time.perf_counter()
  selected = select_nodes(args.strategy, graph, args.budget, [args.seed], query, model)[0]
  seconds = time.perf_counter() - start
  print(f"{args.strategy} selected {selected.size} of {graph.num_nodes} nodes on {graph.name} "
        f"({source.describe()}) in {seconds:.3f} s (including compilation):")
  print(" ".join(map(str, selected.tolist())))
  report = Report("graph_select", f"jaxrepro graph select --strategy {args.strategy}",
                  config={"strategy": args.strategy, "budget": args.budget, "seed": args.seed,
                          "query": dataclasses.asdict(query), "gnn": dataclasses.asdict(model)},
                  data={"source": source.describe(), **graph.summary()},
                  metrics={"selected": selected,
                           "class_counts": np.bincount(graph.labels[selected],
                                                       minlength=graph.num_classes)},
                  timings={"query_seconds_first_call": seconds})
  if args.json:
    report.write_json(args.json)
  if args.out:
    report.write(args.out)
  return 0


def _cmd_run(args: argparse.Namespace) -> int:
  from graph_al.active import markdown_table, run_experiment
  from graph_al.datasets import load_graph
  from graph_al.strategies import STRATEGIES
  from jaxrepro.metrics import plot_curves
  strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
  unknown = sorted(set(strategies) - set(STRATEGIES))
  if unknown:
    raise ValueError(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}")
  if args.quick:
    args.seeds, args.budgets, args.epochs = QUICK["seeds"], list(QUICK["budgets"]), \
        min(args.epochs, QUICK["epochs"])
  graph, source = load_graph(args.data, seed=args.seed)
  if max(args.budgets) > graph.num_nodes:
    raise ValueError(f"budget {max(args.budgets)} exceeds the {graph.num_nodes} nodes of "
                     f"{graph.name}")
  query, model = _configs(args)
  seeds = list(range(args.seed, args.seed + args.seeds))
  result = run_experiment(graph, strategies, args.budgets, seeds, query, model)
  table = markdown_table(result["table"], f"{graph.name} ({model.model})")
  print(f"data: {source.describe()}\n")
  print(table)
  report = Report("graph_run", "jaxrepro graph run",
                  config={"strategies": strategies, "budgets": args.budgets, "seeds": seeds,
                          "query": dataclasses.asdict(query), "gnn": dataclasses.asdict(model)},
                  data={"source": source.describe(), **graph.summary()},
                  metrics={"table": result["table"]},
                  timings={"strategy_seconds": result["seconds"]})
  if args.json:
    report.write_json(args.json)
  if args.out:
    report.write(args.out)
    curves = {s: (args.budgets, [result["table"][s][b]["macro_f1_mean"] for b in args.budgets])
              for s in strategies}
    bands = {s: ([r["macro_f1_mean"] - r["macro_f1_std"] for r in result["table"][s].values()],
                 [r["macro_f1_mean"] + r["macro_f1_std"] for r in result["table"][s].values()])
             for s in strategies}
    plot_curves(curves, f"{args.out}/graph_run_{graph.name}.png", xlabel="budget (labelled nodes)",
                ylabel="macro-F1 (%)", title=f"{graph.name}, {model.model}, {len(seeds)} seeds",
                logx=True, bands=bands)
    with open(f"{args.out}/graph_run.md", "a") as f:
      f.write("\n" + table)
  return 0


def register(subparsers: argparse._SubParsersAction) -> None:
  from graph_al.strategies import STRATEGIES
  family = subparsers.add_parser("graph", help="SPA active learning on graphs (arXiv 2312.04307)")
  commands = family.add_subparsers(dest="command", metavar="COMMAND", required=True)

  select = commands.add_parser("select", help="query a budget of nodes to label")
  add_common_args(select, data_help=DATA_HELP)
  select.add_argument("--strategy", choices=STRATEGIES, default="spa")
  select.add_argument("--budget", type=int, default=40)
  _add_query_args(select)
  select.set_defaults(func=_cmd_select)

  run = commands.add_parser("run", help="strategies x budgets x seeds: macro-F1 table and plot")
  add_common_args(run, data_help=DATA_HELP)
  run.add_argument("--strategies", default=",".join(STRATEGIES),
                   help=f"comma-separated subset of {','.join(STRATEGIES)}")
  run.add_argument("--budgets", type=_int_list, default=[10, 20, 40, 80, 160])
  run.add_argument("--seeds", type=int, default=10, help="number of seeds")
  _add_query_args(run)
  run.set_defaults(func=_cmd_run)
