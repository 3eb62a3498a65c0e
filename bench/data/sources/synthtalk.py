"""synthtalk as a dataset: built (or found in the cache) and loaded by `bench.data.synthtalk.corpus`.

Options: ``size`` (small | medium | large | clips per speaker, default small) and ``seed`` (0).
"""

from __future__ import annotations

from bench.data.raw import DatasetSpec, DATASETS, parse_options


def load(protocol, progress: bool = True) -> list:
    from bench.data.synthtalk import corpus

    options = parse_options("synthtalk", protocol.dataset_options, {"size": "small", "seed": 0})
    root = corpus.build(size=options["size"], seed=int(options["seed"]), progress=progress)
    return corpus.load_clips(root)


DATASETS.register(DatasetSpec("synthtalk", load=load))
