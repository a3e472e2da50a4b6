"""Several nodes through Redis (``sealroom serve --redis``; docs/DEPLOY.md "Several nodes").

Redis is the shared state and the message bus, as in LiveKit's distributed set-up: each
node registers itself with a lease (:mod:`cluster.nodes`), a room is placed on the least
loaded live node at its first join (:mod:`cluster.placement`), the room record a server may
know lives in Redis (:mod:`cluster.roomstore`), and a client's WebSocket on one node is
bridged to the node hosting its room (:mod:`cluster.relay`, :mod:`cluster.cluster`).

Importing this package imports nothing else: ``redis`` (redis-py) is loaded only when a
module of it is, which ``sealroom serve`` does only with ``--redis``; a single node never
loads it.
"""
