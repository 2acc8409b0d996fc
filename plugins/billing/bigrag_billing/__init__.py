"""Billing exporters for bigrag-mcp: Stripe meter events, OpenMeter CloudEvents and Lago events."""
