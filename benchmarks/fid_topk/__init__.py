"""FID top-k (IQA-Adapter paper Table 5): FID against real images and their top-k% IQA subsets, IS, KID, CLIP-T/I.

Importing ``.benchmark`` registers the ``fid-topk`` benchmark and the ``fid-reference`` generator
(``iqabench.benchmarks.builtin`` does); this ``__init__`` imports nothing, so the light ``cli`` module loads alone
for ``iqabench --help``. Modules: ``references`` (reference pairs), ``features`` (torch-fidelity Inception
features cached in the Store; FID/IS/KID), ``stats`` (reference statistics files), ``topk`` (mean z-score
ranking), ``cli`` (``iqabench fid-stats build``), ``benchmark`` (the plugin).
"""
