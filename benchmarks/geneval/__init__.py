"""GenEval (Ghosh et al. 2023): object detection + CLIP colour checks on 553 compositional prompts.

Importing ``.benchmark`` registers the ``geneval`` benchmark (``iqabench.benchmarks.builtin`` does).
Modules: ``rules`` (official scoring rules, pure functions),
``layout`` (official folders and results.jsonl), ``detectors``, ``colors`` and ``clip`` (pluggable models),
``benchmark`` (the plugin).
"""

