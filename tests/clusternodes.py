"""Sealroom nodes of one cluster inside the test's event loop (tests/test_cluster*.py).

Each node is what ``sealroom serve --redis URL --node-id ID`` runs: a SignalingServer with
its own SFU and its own :class:`cluster.cluster.Cluster`, listening on a loopback port of
its own, its SFU bound to a loopback address of its own (127.0.0.1, 127.0.0.2, …, all on
``lo``), so a client's media reaching a node's address proves which SFU carries it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bench.links import Loopback
from cluster.cluster import Cluster
from cluster.nodes import NodeInfo
from sealroom.metrics import Metrics
from sfu import Sfu, SfuConfig
from signaling.config import ServerConfig
from signaling.server import SignalingServer


@dataclass
class Node(Loopback):
    node_id: str
    server: SignalingServer
    cluster: Cluster
    sfu: Sfu | None
    runner: web.AppRunner
    port: int
    media_host: str

    async def stop(self) -> None:
        await self.runner.cleanup()  # drains, closes the SFU and leaves the cluster


async def start_node(redis_url: str, node_id: str, media_host: str, ports: tuple[int, int],
                     *, lease: float = 6.0, sfu: bool = True, **overrides: Any) -> Node:
    cfg = ServerConfig(host="127.0.0.1", port=0, **overrides)
    media = Sfu(SfuConfig(bind_host=media_host, port_min=ports[0], port_max=ports[1])) \
        if sfu else None
    info = NodeInfo(id=node_id, url="", media=media_host)
    cluster = Cluster.from_url(redis_url, info, record_ttl=cfg.empty_ttl, lease=lease)
    server = SignalingServer(cfg, media, metrics=Metrics, cluster=cluster)
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()  # app startup: the node registers (cluster.start)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return Node(node_id, server, cluster, media, runner, port, media_host)
