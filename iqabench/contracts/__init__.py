"""The typed data the stages pass each other: errors, registries, specs (what), execution (how), options, the
generator protocol, results, declared needs.

Imports nothing: a module of this subpackage is imported by its full name.
"""
