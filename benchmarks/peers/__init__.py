"""What a user would run instead: PyTorch peers, timed on the same machine.

Each peer is a module that runs as its own process and prints one JSON
object (`python -m peers.NAME ...` with `benchmarks/` on PYTHONPATH), so that
PyTorch's threads never share a process with JAX's, and `make test` never
needs torch. The networks, optimizers, batch sizes and data handling are
those of `../shared/peers/` (see `docs/performance.md`).
"""
