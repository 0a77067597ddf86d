"""GaLore, Q-GaLore (arXiv 2407.08296), OwLore (arXiv 2405.18380) and LoRA as optax transformations."""
