"""Signaling plane: rooms, password admission, sealed relay, resume, TURN credentials."""
