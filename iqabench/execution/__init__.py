"""How work runs on a device: runtime, batch policy and out-of-memory back-off, fast paths, sharding, stage timing,
image tensors and checks.

Imports nothing: a module of this subpackage is imported by its full name.
"""
