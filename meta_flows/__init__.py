"""Prefect meta-flows that deploy Prefect flows to AWS ECS: bootstrap, build, register, deploy."""
