"""Name -> factory registries for generators, metrics and benchmarks.

Plain dicts behind ``register_*`` functions, in the spirit of
``torch_fidelity/registry.py``: duplicates are refused with a clear message and
unknown names fail with close-match suggestions. Entries come from three places,
in this order: the built-ins (imported lazily on first lookup), Python entry
points (``iqabench.generators`` / ``iqabench.metrics`` / ``iqabench.benchmarks``)
and user files passed with ``--plugin``.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError, UserInputError, UserLookupError


class UnknownNameError(UserLookupError):
    """Raised for a name that is not registered; the message carries suggestions."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0])


class RegistryError(UserInputError):
    """Raised for a bad registration (duplicate or malformed name)."""


@dataclass
class Entry:
    """One registered thing: its factory plus what ``iqabench list`` shows."""

    name: str
    factory: Callable[..., Any]
    description: str = ""
    # Returns (present, detail), e.g. (False, "not in ~/.cache/huggingface"); present=None means "uses other
    # entries' weights" (detail says whose). A None callable: needs no weights.
    weights: Callable[[], tuple[bool | None, str]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def weights_status(self) -> str:
        if self.weights is None:
            return "none needed"
        try:
            present, detail = self.weights()
        except Exception as exc:  # a status probe must never break listing
            return f"unknown ({exc})"
        if present is None:  # nothing of its own: it uses other entries' weights
            return detail
        return ("present" if present else "missing") + (f": {detail}" if detail else "")


class Registry:
    """A dict of :class:`Entry` keyed by name, filled lazily from built-ins and entry points."""

    def __init__(self, kind: str, builtin_modules: tuple[str, ...], entry_point_group: str,
                 builtin_index: Mapping[str, str] | None = None):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._builtin_modules = builtin_modules
        self._builtin_index = dict(builtin_index or {})
        self._entry_point_group = entry_point_group
        self._loaded = False

    # -- registration -----------------------------------------------------------------
    def add(self, entry: Entry, *, overwrite: bool = False) -> Entry:
        name = entry.name
        if not isinstance(name, str) or not name or name != name.strip() or any(c in name for c in "[],"):
            raise RegistryError(f"invalid {self.kind} name {name!r}: use a non-empty name without '[],'")
        if name in self._entries and not overwrite and self._entries[name].factory is not entry.factory:
            raise RegistryError(
                f"{self.kind} {name!r} is already registered (by {_where(self._entries[name].factory)}); "
                "pick another name or pass overwrite=True"
            )
        self._entries[name] = entry
        return entry

    def register(self, name: str, *, description: str = "", weights=None, overwrite: bool = False, **extra):
        """Decorator form: ``@registry.register("name", description=...)``."""

        def decorator(factory):
            doc = description or (factory.__doc__ or "").strip().split("\n")[0]
            self.add(Entry(name, factory, doc, weights, dict(extra)), overwrite=overwrite)
            return factory

        return decorator

    # -- lookup -----------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtin_modules:
            importlib.import_module(module)
        for ep in importlib.metadata.entry_points(group=self._entry_point_group):
            try:
                obj = ep.load()
            except Exception as exc:
                print(f"warning: could not load {self.kind} plugin {ep.name!r} ({ep.value}): {exc}",
                      file=sys.stderr)
                continue
            if ep.name not in self._entries and callable(obj):
                self.add(Entry(ep.name, obj, (obj.__doc__ or "").strip().split("\n")[0]))

    def get(self, name: str) -> Entry:
        if not self._loaded and name not in self._entries and name in self._builtin_index:
            # A run asks for one built-in: import its module alone, not every built-in's dependencies (plotting
            # stacks, detectors). Built-ins win over entry points with the same name, so the answer is the same
            # one a full load would give.
            importlib.import_module(self._builtin_index[name])
        if name in self._entries and (self._loaded or name in self._builtin_index):
            return self._entries[name]
        self._ensure_loaded()
        if name in self._entries:
            return self._entries[name]
        raise UnknownNameError(unknown_name_message(self.kind, name, self._entries))

    def __contains__(self, name: str) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        self._ensure_loaded()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        return [e.name for e in self]

    def remove(self, name: str) -> None:
        self._entries.pop(name, None)


def unknown_name_message(kind: str, name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} Run `iqabench list {kind}s` to see all."


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def load_plugin(path_or_module: str) -> None:
    """Import a user's plugin (a ``.py`` file path or a dotted module name) so it can register things."""
    candidate = Path(path_or_module)
    if path_or_module.endswith(".py") or candidate.is_file():
        if not candidate.is_file():
            raise FileNotFoundError(f"plugin file {path_or_module!r} does not exist")
        digest = hashlib.sha256(str(candidate.resolve()).encode()).hexdigest()[:16]
        module_name = f"iqabench_plugin_{digest}"
        if module_name in sys.modules:
            # Already imported (the CLI loads --plugin, then the Runner loads the spec's plugins): running the
            # file again would register every name a second time and fail as a duplicate.
            return
        spec = importlib.util.spec_from_file_location(module_name, candidate)
        if spec is None or spec.loader is None:
            raise PluginImportError(f"cannot import plugin file {path_or_module!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except SyntaxError as exc:
            sys.modules.pop(module_name, None)
            message = f"plugin file {path_or_module!r} has a syntax error at line {exc.lineno}: {exc.msg}"
            raise PluginImportError(message) from exc
        except Exception as exc:
            sys.modules.pop(module_name, None)  # a fixed file can be loaded again
            raise PluginImportError(_import_failure(path_or_module, exc, candidate.resolve())) from exc
        except SystemExit as exc:
            sys.modules.pop(module_name, None)
            raise PluginImportError(_exit_at_import(path_or_module, exc)) from None
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
        return
    try:
        importlib.import_module(path_or_module)
    except ModuleNotFoundError as exc:
        if exc.name and path_or_module.split(".")[0] != exc.name.split(".")[0]:
            raise PluginImportError(_import_failure(path_or_module, exc, None)) from exc
        raise PluginImportError(f"plugin {path_or_module!r} is neither a .py file nor an importable module: "
                                f"{exc}") from exc
    except Exception as exc:
        raise PluginImportError(_import_failure(path_or_module, exc, None)) from exc
    except SystemExit as exc:
        raise PluginImportError(_exit_at_import(path_or_module, exc)) from None


def _exit_at_import(plugin: str, exc: SystemExit) -> str:
    """A plugin that calls sys.exit() while imported would end iqabench (with code 0: "success") having done
    nothing; it is an error instead."""
    return (f"plugin {plugin!r} called sys.exit({exc.code!r}) while being imported; a plugin must register things, "
            "not exit: remove the exit from its top level")


class PluginImportError(UserError, ImportError):
    """A plugin that raised while being imported; the message names the plugin, the line and the error."""


def _import_failure(plugin: str, exc: BaseException, path: Path | None) -> str:
    """One sentence: which plugin, where in it (the deepest frame inside the plugin), and what it raised."""
    where = ""
    tb = exc.__traceback__
    while tb is not None:
        if path is None or Path(tb.tb_frame.f_code.co_filename).resolve() == path:
            where = f" at line {tb.tb_lineno} of {tb.tb_frame.f_code.co_filename}"  # the deepest such frame wins
        tb = tb.tb_next
    text = str(exc).strip().splitlines()
    detail = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return f"plugin {plugin!r} failed while being imported{where} ({detail}); fix it or leave out --plugin {plugin}"


GENERATORS = Registry("generator", ("iqabench.adapters.builtin",), "iqabench.generators")
METRICS = Registry("metric", ("iqabench.metrics",), "iqabench.metrics")
BENCHMARKS = Registry("benchmark", ("iqabench.benchmarks.builtin",), "iqabench.benchmarks",
                      builtin_index={
                          "adversarial-gradcam": "iqabench.benchmarks.adversarial_gradcam",
                          "condition-sweep": "iqabench.benchmarks.condition_sweep",
                          "fid-topk": "iqabench.benchmarks.fid_topk.benchmark",
                          "fr-distances": "iqabench.benchmarks.fr_distances",
                          "geneval": "iqabench.benchmarks.geneval.benchmark",
                          "relgain": "iqabench.benchmarks.relgain",
                          "scale-sweep": "iqabench.benchmarks.scale_sweep",
                          "scores": "iqabench.benchmarks.scores",
                          "seed-consistency": "iqabench.benchmarks.seed_consistency",
                      })
