"""What the cluster package raises to the signaling server (no redis import here)."""

from __future__ import annotations


class ClusterUnavailable(Exception):
    """Redis cannot be reached now (or no node is live, or the room's host does not
    listen): a new join gets ``cluster-unavailable`` (docs/PROTOCOL.md "Errors")."""
