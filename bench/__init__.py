"""talkbench harness: protocols, data, runner, cache, results and reports."""

__version__ = "0.1.0"
