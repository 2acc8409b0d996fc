"""Conformance suites that plugin authors run against their own plugins."""
