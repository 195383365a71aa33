"""Evaluation: the harness (pass@k on held-out benchmarks), its scores, and method comparisons."""
