"""The paper's evaluation (arXiv 2312.04307, Sec. 4): one-shot query with zero initial labels,
train a GNN on the queried nodes, macro-F1 and accuracy on all other nodes, mean and std over
seeds, per strategy and budget.

All seeds x budgets of one strategy train as one ``vmap``-ped program; seed ``s`` initializes
its model with the same key for every strategy, so strategies are compared on paired models.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from graph_al import gnn
from graph_al.evaluation import macro_f1_accuracy
from graph_al.strategies import QueryConfig, select_nodes
from jaxrepro.progress import progress


def evaluate_selections(graph, selections: np.ndarray, seeds: Sequence[int],
                        gnn_config: gnn.GNNConfig) -> tuple[np.ndarray, np.ndarray]:
  """Macro-F1 and accuracy ([..., S]) of GNNs trained on ``selections`` ([..., S, b])."""
  lead = selections.shape[:-1]
  flat = selections.reshape(-1, selections.shape[-1])
  masks = np.zeros((flat.shape[0], graph.num_nodes), bool)
  np.put_along_axis(masks, flat, True, axis=1)
  model_seeds = np.broadcast_to(np.asarray(seeds), lead).reshape(-1)
  inputs = gnn.gnn_inputs(graph, gnn_config)
  models = gnn.train(inputs, masks, jax.vmap(jax.random.key)(jnp.asarray(model_seeds)),
                     gnn_config)
  predictions = jnp.argmax(gnn.predict(models, inputs), -1)
  f1, accuracy = macro_f1_accuracy(predictions, inputs.labels, jnp.asarray(~masks),
                                   graph.num_classes)
  return np.asarray(f1).reshape(lead), np.asarray(accuracy).reshape(lead)


def run_experiment(graph, strategies: Sequence[str], budgets: Sequence[int],
                   seeds: Sequence[int], config: QueryConfig = QueryConfig(),
                   gnn_config: gnn.GNNConfig = gnn.GNNConfig()) -> dict[str, Any]:
  """``{"table": {strategy: {budget: stats}}, "seconds": {strategy: wall time}}`` in percent."""
  table, seconds = {}, {}
  for strategy in progress(list(strategies), desc=f"{graph.name}: strategies"):
    start = time.perf_counter()
    f1s, accs = [], []
    # Budgets differ in width, so each budget is one vmapped batch over the seeds.
    for budget in budgets:
      selections = select_nodes(strategy, graph, budget, seeds, config, gnn_config)
      f1, accuracy = evaluate_selections(graph, selections, seeds, gnn_config)
      f1s.append(f1)
      accs.append(accuracy)
    table[strategy] = {
        int(b): {"macro_f1_mean": 100 * float(f.mean()), "macro_f1_std": 100 * float(f.std()),
                 "accuracy_mean": 100 * float(a.mean()), "accuracy_std": 100 * float(a.std()),
                 "macro_f1_per_seed": [round(100 * float(x), 2) for x in f]}
        for b, f, a in zip(budgets, f1s, accs)}
    seconds[strategy] = time.perf_counter() - start
  return {"table": table, "seconds": seconds}


def markdown_table(table: dict[str, dict[int, dict[str, float]]], title: str,
                   metric: str = "macro_f1") -> str:
  """``metric``: ``macro_f1`` or ``accuracy``."""
  budgets = sorted({b for rows in table.values() for b in rows})
  name = {"macro_f1": "macro-F1", "accuracy": "accuracy"}[metric]
  lines = [f"### {title}: {name} (%) mean ± std", "",
           "| strategy | " + " | ".join(str(b) for b in budgets) + " |",
           "| --- |" + " --- |" * len(budgets)]
  for strategy, rows in table.items():
    cells = [f"{rows[b][metric + '_mean']:.1f} ± {rows[b][metric + '_std']:.1f}" if b in rows
             else "" for b in budgets]
    lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"
