"""Participants written in Python, and what tests and benchmarks need to run real ones.

``client`` speaks docs/PROTOCOL.md (join, sealed relay, resume, reconnect); ``sfupeer`` is
the SFU-message loop the Python participants share; ``mediabot``
publishes and receives RTP on the SFU's own ``RawPeer`` and never decodes; ``e2eebot`` is
a ``mediabot`` that encrypts and decrypts frames as the browser's worker does; ``browser``
and ``fakecam`` hold the headless Chromium settings and the moving fake camera that the
browser tests and the link benchmarks share.
"""
