"""Keyword search: the analyzer and the sparse BM25 index of a partition."""
