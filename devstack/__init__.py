"""Dev-only local stack: Docker engine, registry, AWS emulator, Prefect server and base image.

Nothing in the product (`meta_flows/`) imports this package. Run `python -m devstack --help`.
"""
