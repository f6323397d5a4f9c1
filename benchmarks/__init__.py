"""Built-in benchmark plugins (import name ``iqabench.benchmarks``).

Importing :mod:`iqabench.benchmarks.builtin` registers them (the registry does
so lazily on the first lookup); this ``__init__`` imports nothing so that light
submodules (the ``geneval`` and ``study`` CLI commands) load alone.
"""
