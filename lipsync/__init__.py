"""lipsync: turn an audio track and a template (video or still photo of a person) into a
lip-synced talking-head MP4.

This package is the rendering half of lipsyncd. It never imports the daemon; the daemon
(and the ``lipsyncd render`` command) call :func:`lipsync.render.render` with an engine
created by :func:`lipsync.engines.create_engine`.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
