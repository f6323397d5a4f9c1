"""Reading and writing files safely: prompts, JSON Lines, CSV cells, tensor-only checkpoint loads, hub code opt-in,
hub snapshot files, training checkpoints, the Jinja environment.

Imports nothing: a module of this subpackage is imported by its full name.
"""
