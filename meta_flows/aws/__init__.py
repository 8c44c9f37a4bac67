"""Thin, typed wrappers over the boto3 calls the meta-flows make."""
