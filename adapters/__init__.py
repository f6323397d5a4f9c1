"""Built-in generator implementations (import name ``iqabench.adapters``).

Importing :mod:`iqabench.adapters.builtin` registers every built-in generator
family with ``iqabench.contracts.generators.register_generator``; the registry imports it
lazily on the first lookup. This package ``__init__`` imports nothing, so a
light submodule (e.g. ``acpo.cli`` for ``iqabench --help``) loads alone.
"""
