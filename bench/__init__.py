"""Forwarding benchmark."""
