"""``iqabench fetch``: the files a run needs, listed (``--list``) or downloaded into the caches its loaders read.

It takes ``run``'s selection arguments and plans the run exactly as ``run`` does
(:func:`iqabench.engine.planning.plan_work`, the pure planning step the Runner itself calls: no store, no run folder),
so the list is what the run will load: nothing missing, nothing extra. ``iqabench fetch train <command> ...``
takes a ``train`` command's own arguments instead and lists what that training loads, from the needs function
the command registered (:func:`register_train_needs`; the command checks the same list before training).
The cluster workflow: ``iqabench fetch ...`` on a login node with internet, then ``iqabench run ... --offline``
(or ``HF_HUB_OFFLINE=1``) on the compute nodes that share the caches.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand

from .common import PluginOption, console, load_plugins, out_console

#: ``run`` options that choose what a run loads (kept in the suggested ``iqabench fetch`` command), with whether
#: each takes a value; every other ``run`` option (speed, output, --dry-run) is dropped from it.
SELECTION_OPTIONS = {"--generator": True, "-g": True, "--metrics": True, "--baseline": True, "--prompts": True,
                     "--prompt-column": True, "--limit": True, "--seeds": True, "--preset": True, "--option": True,
                     "--plugin": True}


def fetch_hint(argv: list[str], flags: frozenset[str] | None = None) -> str:
    """``iqabench fetch`` with the selection arguments of this ``iqabench run`` command line (or, for ``iqabench
    train <command> ...``, ``iqabench fetch train <command>`` with all of that command's arguments).

    ``flags``: the options of ``run`` that take no value (``run`` passes :func:`value_less_options` of itself),
    so the word after one (the benchmark, after ``--overwrite``) is never dropped as its value."""
    if "train" in argv and "run" not in argv[:argv.index("train")]:
        return " ".join(_quote(w) for w in ["iqabench", "fetch", *argv[argv.index("train"):]])
    flags = frozenset() if flags is None else flags
    words, i = ["iqabench", "fetch"], 0
    args = argv[argv.index("run") + 1:] if "run" in argv else []
    while i < len(args):
        word = args[i]
        name = word.split("=", 1)[0]
        if not word.startswith("-"):
            words.append(word)
        elif name in SELECTION_OPTIONS:
            takes = SELECTION_OPTIONS[name] and "=" not in word
            words += args[i:i + 1 + takes]
            i += takes
        elif "=" not in word and i + 1 < len(args) and not args[i + 1].startswith("-") and name not in flags:
            i += 1  # another option's value
        i += 1
    return " ".join(_quote(w) for w in words)


def value_less_options(command: Callable[..., Any]) -> frozenset[str]:
    """Every option of a Typer command function that takes no value (its ``bool`` parameters), with all their
    spellings, read from its annotations: ``run`` passes its own, so the list never falls behind the command (a
    hand list lacked ``--overwrite`` and ``--trust-hub-code``, and the hint lost the benchmark after them)."""
    import typing

    flags: set[str] = set()
    for name, hint in typing.get_type_hints(command, include_extras=True).items():
        base, *extras = typing.get_args(hint) if typing.get_origin(hint) is Annotated else (hint,)
        if base is not bool:
            continue
        decls = []
        for info in extras:  # typer.Option("--x/--no-x", "-x"): in Annotated its first argument is a declaration
            first = getattr(info, "default", None)
            decls += ([first] if isinstance(first, str) else []) + list(getattr(info, "param_decls", ()) or ())
        names = [d for decl in decls for d in decl.split("/") if d.strip().startswith("-")]
        flags.update(d.strip() for d in names)
        if not names:  # a plain `flag: bool = False` parameter: Typer spells it from the name
            flags.add(f"--{name.replace('_', '-')}")
    return frozenset(flags)


def _quote(word: str) -> str:
    import shlex

    return shlex.quote(word)


def print_missing(exc) -> None:
    """A :class:`~iqabench.engine.preflight.MissingPiecesError` as one sentence and one table (wrapping, never cut)."""
    from ..engine.preflight import as_rows

    console.print(f"[bold red]error:[/] {escape(exc.summary())}", highlight=False)  # wraps at the width
    table = Table("#", "missing piece: what (size), where it goes, where it comes from", box=box.SIMPLE_HEAD,
                  show_lines=True)
    table.columns[1].overflow = "fold"
    for number, row in enumerate(as_rows(exc.missing), 1):
        size = f" ({row['size']})" if row["size"] else ""
        table.add_row(str(number), escape(f"{row['what']}{size}\nto   {row['destination']}\nfrom {row['source']}"))
    console.print(table)


def fetch_command(
    benchmark: Annotated[str, typer.Argument(help="Benchmark name, as for `iqabench run`.")],
    generator: Annotated[list[str] | None, typer.Option("--generator", "-g", help="Generator spec (repeatable).")]
    = None,
    metrics: Annotated[str | None, typer.Option(help="Comma-separated metric names [default: piqe,entropy].")]
    = None,
    baseline: Annotated[str | None, typer.Option(help="Override the generators' own baseline.")] = None,
    prompts: Annotated[str | None, typer.Option(help="Prompt set or file, as for run.")] = None,
    prompt_column: Annotated[str | None, typer.Option(help="Column holding prompts in CSV/TSV/JSONL.")] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N prompts.")] = None,
    seeds: Annotated[str | None, typer.Option(help="Seeds, e.g. '0-3'.")] = None,
    preset: Annotated[str | None, typer.Option(help="A paper's setting, e.g. paper:iqa-fig3a.")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="Benchmark option key=value (repeatable).")]
    = None,
    plugin: PluginOption = None,
    list_only: Annotated[bool, typer.Option("--list", help="Print every file the run loads (size, destination, "
                                                           "source) and download nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --list: one JSON object per file, for scripts.")]
    = False,
) -> None:
    """Download every file a run needs (or --list them); then `iqabench run` the same arguments offline.

    `iqabench fetch train <command> <its arguments>` does the same for a training command (acpo, iqa-adapter,
    ipce, two-stream)."""
    if metrics and not plugin:
        from .selection import check_metric_names

        check_metric_names(metrics)  # a typo answered in a second, as `run` does, before the models' imports
    from ..contracts.execution import Execution
    from ..contracts.generators import GeneratorPool
    from ..contracts.specs import RunSpec
    from ..engine.planning import plan_work
    from ..execution.runtime import Runtime
    from .selection import parse_options, run_fields

    load_plugins(plugin)
    options = parse_options(option, prompt_column)
    fields = run_fields(benchmark, generator, metrics, prompts, seeds, limit, options, preset)
    spec = RunSpec(benchmark=benchmark, **fields, baseline=baseline, plugins=list(plugin or []))
    # Pure planning (what the Runner calls before it opens a store): generators declare their files, metrics and
    # the benchmark add theirs; nothing is loaded, no store or run folder is made. The variant a pipeline loads
    # comes from the spec, not the device, so planning on the CPU lists what a GPU run loads.
    runtime = Runtime.from_execution(Execution(device="cpu"), spec.dtype, device="cpu")
    list_or_fetch(plan_work(spec, GeneratorPool(runtime)).needs, list_only=list_only, as_json=as_json)


def list_or_fetch(needs: list, *, list_only: bool, as_json: bool) -> None:
    """``--list`` (a table, or ``--json`` lines) of ``needs``, or download the missing fetchable ones."""
    from ..engine.fetch import FileRow, fetch, file_rows, human_size, unreachable
    from ..metrics import offline_mode

    if not needs:  # not an empty table, not "all 0 file(s)"; with --json: no lines
        if not as_json:
            out_console.print("this command needs no downloaded files", highlight=False)
        return
    network = "offline mode (HF_HUB_OFFLINE/IQABENCH_OFFLINE)" if offline_mode() else unreachable()
    if list_only:
        rows: list[FileRow] = file_rows(needs, online=network is None)
        if as_json:
            import json

            for row in rows:  # plain lines (rich would wrap them at the terminal width)
                typer.echo(json.dumps({**row.__dict__, "destination": str(row.destination)}))
            return
        _print_rows(rows)
        return
    missing = [n for n in needs if not n.present]
    manual = [n for n in missing if not n.fetchable]
    if not missing:
        out_console.print(f"all {len(needs)} file(s) this command needs are present", highlight=False)
        return
    if network is not None and any(n.fetchable for n in missing):
        console.print(f"[bold red]error:[/] {escape(network)}: nothing was downloaded", highlight=False)
        raise typer.Exit(2)
    for need in manual:  # said before any download starts, not after the others arrived
        console.print(f"[yellow]by hand:[/] {escape(need.what)}: {escape(need.source)} "
                      f"({escape(str(need.destination))})", highlight=False, soft_wrap=True)
    failures = fetch(missing, log=lambda m: console.print(escape(m), highlight=False))
    for line in failures:
        console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    if failures or manual:
        raise typer.Exit(2)
    fetched = [n for n in missing if n.fetchable]
    total = sum(n.size or 0 for n in fetched)
    out_console.print(f"fetched {len(fetched)} missing piece(s){' (' + human_size(total) + ' known)' if total else ''}"
                      "; the command can run offline now", highlight=False)


# -- training commands ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainNeeds:
    """How a ``train`` command's files are planned: ``plan(params)`` with the command's parsed parameters; ``uses``
    names the parameters the plan reads (they keep their ``required``; the others, such as --data and --out, may
    be left out of ``iqabench fetch train ...``)."""

    plan: Callable[[dict[str, Any]], list]
    uses: tuple[str, ...]


#: ``train`` command name -> its needs plan (plugins register in their ``mount``).
TRAIN_NEEDS: dict[str, TrainNeeds] = {}


def register_train_needs(command: str, plan: Callable[[dict[str, Any]], list], uses: tuple[str, ...] = ()) -> None:
    """Let ``iqabench fetch train <command> ...`` list and download what ``train <command>`` loads."""
    TRAIN_NEEDS[command] = TrainNeeds(plan, tuple(uses))


def check_before_training(needs: list) -> None:
    """A training command's preflight: online, download what is missing (saying what); otherwise one table of
    every missing piece with the ``iqabench fetch train ...`` command, and exit 2 before anything is loaded."""
    from ..engine.preflight import MissingPiecesError, ensure_present

    try:
        ensure_present(needs, log=lambda m: console.print(escape(m), highlight=False), fetch_hint=current_fetch_hint())
    except MissingPiecesError as exc:
        print_missing(exc)
        raise typer.Exit(2) from None


_TRAIN_ARGS = "iqabench.cli.fetch.train_args"
_FETCH_FLAGS = ("--list", "--json")


class FetchCommand(TyperCommand):
    """``fetch BENCHMARK [run's selection]``, or ``fetch train COMMAND [that command's arguments]``: the second
    form is parsed by the training command's own options, so its command line can be pasted as is."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args[:1] == ["train"]:
            ctx.meta[_TRAIN_ARGS] = list(args[1:])
            return []
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        if _TRAIN_ARGS in ctx.meta:
            return fetch_train(ctx, ctx.meta.pop(_TRAIN_ARGS))
        return super().invoke(ctx)


def fetch_train(ctx: Any, args: list[str]) -> None:
    """``iqabench fetch train COMMAND ...``: the needs the command registered, listed or downloaded."""
    flags = {flag: flag in args for flag in _FETCH_FLAGS}
    rest = [a for a in args if a not in _FETCH_FLAGS]
    known = ", ".join(sorted(TRAIN_NEEDS)) or "none"
    if not rest or rest[0].startswith("-"):
        raise typer.BadParameter(f"name the training command: iqabench fetch train {{{known}}} <its arguments> "
                                 "[--list] [--json]", ctx=ctx)
    name, rest = rest[0], rest[1:]
    train = ctx.find_root().command.get_command(ctx, "train")
    command = train.get_command(ctx, name) if hasattr(train, "get_command") else None
    if command is None or name not in TRAIN_NEEDS:
        raise typer.BadParameter(f"`iqabench fetch train {name}`: no training command {name!r} declares its "
                                 f"files; known: {known}", ctx=ctx)
    entry = TRAIN_NEEDS[name]
    relaxed = copy.copy(command)  # only what the plan reads stays required: --data, --out may be left out
    relaxed.params = [param if param.name in entry.uses else _optional(param) for param in command.params]
    with relaxed.make_context(f"iqabench fetch train {name}", rest, parent=ctx) as sub:
        params = dict(sub.params)
    list_or_fetch(entry.plan(params), list_only=flags["--list"], as_json=flags["--json"])


def _optional(param: Any) -> Any:
    relaxed = copy.copy(param)
    relaxed.required = False
    return relaxed


def _print_rows(rows) -> None:
    from ..engine.fetch import human_size

    table = Table("what", "file", "size", "destination / source", box=box.SIMPLE_HEAD)
    for column in table.columns:
        column.overflow = "fold"
    for row in rows:
        mark = "" if row.present else " (missing)"
        table.add_row(escape(row.what + mark), escape(row.name), human_size(row.size),
                      escape(f"{row.destination}\nfrom {row.source}"))
    out_console.print(table)
    known = [r.size for r in rows if r.size is not None]
    if not known:
        total = "sizes unknown (missing files are sized by asking their servers: run --list online)"
    else:
        total = human_size(sum(known)) + (f" known ({len(rows) - len(known)} of unknown size)"
                                          if len(known) < len(rows) else "")
    out_console.print(f"{len(rows)} file(s), {total}", highlight=False)


def current_fetch_hint(flags: frozenset[str] | None = None) -> str:
    return fetch_hint(sys.argv, flags)

