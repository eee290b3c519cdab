"""Fault injection for tests: an S3 proxy with fault rules and reliability scenarios."""
