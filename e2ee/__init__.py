"""The Python reference of the browser's cryptography, byte for byte its twin.

``roomcrypto`` (web/js/roomcrypto.js): the room password's KDF, admission keys and the
sealed signaling envelope (docs/PROTOCOL.md); ``sframe`` (e2ee-worker/worker.js): the media
frame format (e2ee-worker/FORMAT.md); ``mediakeys`` (web/js/mediakeys.js): the media-key
protocol between members. Nothing here imports the rest of the project: the signaling
server verifies admission with ``roomcrypto``; bots and tests use all three.
"""
