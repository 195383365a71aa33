"""What a run tells: the run log (metrics.jsonl, console lines) and Prometheus metrics."""
