"""Benchmark of the meta-flows against `prefect deploy` with prefect-docker's build and push steps."""
