"""SPA (arXiv 2312.04307): SCAN structural clustering + PageRank active learning for GNNs."""

from graph_al.active import evaluate_selections, run_experiment
from graph_al.datasets import karate_graph, load_graph, load_npz, load_planetoid, sbm_graph
from graph_al.evaluation import macro_f1_accuracy
from graph_al.gnn import GCN, GNNConfig, GraphSAGE, gnn_inputs, predict, train
from graph_al.graph import Graph, make_graph
from graph_al.pagerank import graph_pagerank, pagerank, part_pagerank
from graph_al.scan import ScanResult, scan, structural_similarity
from graph_al.spa import spa_from_scores, spa_query
from graph_al.strategies import STRATEGIES, QueryConfig, select_nodes

__all__ = [
    "GCN", "GNNConfig", "Graph", "GraphSAGE", "QueryConfig", "STRATEGIES", "ScanResult",
    "evaluate_selections", "gnn_inputs", "graph_pagerank", "karate_graph", "load_graph",
    "load_npz", "load_planetoid", "macro_f1_accuracy", "make_graph", "pagerank",
    "part_pagerank", "predict", "run_experiment", "sbm_graph", "scan", "select_nodes",
    "spa_from_scores", "spa_query", "structural_similarity", "train",
]
