"""Options the built-in codecs share, importable without torch.

The codecs' light entry-point modules declare their config dataclasses with these, and
:mod:`v2a_plugins.codecs.precision` (which needs torch) acts on them.
"""

from __future__ import annotations

from typing import Literal

#: A codec part's precision option: ``auto`` measures which is faster on this machine.
Precision = Literal["auto", "float32", "bfloat16"]
#: The options that say a part's precision (the rest of a codec's options key its measurement).
PRECISION_OPTIONS = ("encode_precision", "decode_precision")
