"""talkbench's core: the types, constants, errors, hashing, atomic writes, caches, checkpoints,
paths, registries and the weights registry that every other layer may import.

The core imports nothing from the rest of talkbench (see ARCHITECTURE.md and
tests/test_layering.py): `faces` sits on it, `metrics` and `baselines` on both, the harness
(`bench`) on everything.
"""
