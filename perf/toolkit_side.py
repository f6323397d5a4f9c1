"""The iqabench side of perf/overhead.py: the real `iqabench` CLI in this process, plus its stage clock.

Runs ``iqabench <args>`` exactly as the console script does, and afterwards prints one JSON line with the
runner's stage clock (wall, device-busy and idle seconds per stage) and the process's import time, so the
driver can compare the toolkit's pipeline time with the plain script's. Nothing in iqabench changes: the clock is
read from the runner that ``iqabench.api.execute`` was given.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402


def main() -> int:
    from iqabench import api

    seen: dict = {}
    original = api.execute

    def execute(runner, **kwargs):
        seen["runner"] = runner
        return original(runner, **kwargs)

    api.execute = execute
    from iqabench.cli import main as cli_main

    imports_s, imports_cpu_s = time.perf_counter() - _T0, time.process_time()
    code = 0
    try:
        cli_main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    from iqabench.execution import host_allocator

    runner = seen.get("runner")
    clock = runner.clock.table() if runner is not None else []
    print(json.dumps({"side": "iqabench", "exit": code, "imports_s": imports_s, "imports_cpu_s": imports_cpu_s,
                      "host_allocator": host_allocator._applied,
                      "clock": clock, "total_in_process": time.perf_counter() - _T0,
                      "total_cpu_in_process": time.process_time()}), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
