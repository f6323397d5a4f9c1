"""FID top-k (IQA-Adapter paper Table 5): FID against real images and their top-k% IQA subsets, IS, KID, CLIP-T/I.

Importing registers the ``fid-topk`` benchmark and the ``fid-reference`` generator. Modules: ``references``
(reference pairs), ``features`` (torch-fidelity Inception features cached in the Store; FID/IS/KID), ``topk``
(mean z-score ranking), ``benchmark`` (the plugin).
"""

from . import benchmark  # noqa: F401
