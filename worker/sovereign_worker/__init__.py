"""Data-plane worker that runs inside serving pods: fetch, verify and launch the engine."""

__version__ = "0.1.0"
