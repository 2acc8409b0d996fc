"""Cost controls: `[[limits]]` of the policy, their windows, and the store-backed counters that enforce them.

`model` (the declaration) is imported by the policy loader, so this package's `__init__` imports nothing.
"""
