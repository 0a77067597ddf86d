"""Speech recognition stack, MSRS (arXiv 2406.17614) and DDP-ASR dynamic data pruning (arXiv 2406.18373)."""
