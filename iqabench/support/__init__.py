"""Small shared helpers: paper presets, tiny random pipelines, lazy exports, progress bars, log silencing.

Imports nothing: a module of this subpackage is imported by its full name.
"""
