"""jaxrepro: the runtime the paper families share.

CLI (`jaxrepro.cli`), device mesh and sharding (`jaxrepro.mesh`), orbax checkpoints
(`jaxrepro.checkpoint`), progress bars (`jaxrepro.progress`), JSONL metrics and plots
(`jaxrepro.metrics`), timing/memory/report harness (`jaxrepro.bench`) and data location
(`jaxrepro.data`). Nothing paper-specific lives here.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
