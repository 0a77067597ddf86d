"""SPA (arXiv 2312.04307): SCAN structural clustering + PageRank active learning for GNNs."""
