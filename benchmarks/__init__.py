"""Benchmark scripts, one per paper headline: ``bench_<name>.py`` registers ``<name>`` with
``jaxrepro.bench.benchmark``. Run them with ``jaxrepro bench [NAME ...] [--quick]`` or
``python -m benchmarks.bench_<name>``."""
