"""The ``--plugin`` the ImageReward CLI tests load: iqabench's ImageReward builds its visual encoder at the hub
mirror's scaled-down size (``hub_mirror.imagereward_cache.TINY_BLIP_VIT``), as a test process does with
``use_tiny_blip_vit()``; everything else (files, key names, tokenizer, formula) is the released model's."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hub_mirror.imagereward_cache import use_tiny_blip_vit  # noqa: E402

use_tiny_blip_vit()
