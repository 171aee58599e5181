"""Re-export of :mod:`toolkit.codec.pcapio` (moved to ``codec`` so the ``lab`` layer can write pcaps)."""

from toolkit.codec.pcapio import *  # noqa: F403
from toolkit.codec.pcapio import __all__ as __all__
