"""Running a spec: planning, preflight and fetch, the runner's stages, run.json and run ids, scoring, batch probing,
run status and binding.

Imports nothing: a module of this subpackage is imported by its full name.
"""
