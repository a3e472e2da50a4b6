"""Signaling plane: rooms, password admission, sealed relay, TURN credentials, Python client."""
