"""Multi-node groups: the commands a group's pods run (Ray or vLLM's native mode).

`contract` is pure and shared with the operator's renderer; `commands.register_commands`
adds the click commands to `sovereign-worker`. This package's `__init__` imports nothing,
so the operator can import `contract` without the worker's runtime dependencies.
"""
