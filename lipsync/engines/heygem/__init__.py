"""The ``heygem`` engine: renders by HeyGem / Duix.Avatar servers (see engine.py)."""

from lipsync.engines.heygem.engine import HeyGemEngine

__all__ = ["HeyGemEngine"]
