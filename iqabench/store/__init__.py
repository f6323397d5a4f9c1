"""The content-keyed store: image cache, score table, blobs, run folders, verification, per-process shards,
transactions, atomic writes.

Imports nothing: a module of this subpackage is imported by its full name.
"""
