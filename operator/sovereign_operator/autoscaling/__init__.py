"""Autoscaling on vLLM's own load signals.

Pure: `evidence` (what one scrape round says), `policy` (the decision and its reason; the
algorithm is documented there), `history` (bounded per-deployment evidence), `exposition`
(vLLM's Prometheus text) and `external` (aggregated load published for HPA or KEDA).
I/O: `scraper` (concurrent /metrics fetches) and `loop` (the one operator-wide task, wired
to the cluster through injected callables).
"""
