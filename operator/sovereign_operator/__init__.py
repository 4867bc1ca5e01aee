"""Kubernetes operator for sovereign open-weight model serving."""

__version__ = "0.1.0"
