"""`python -m sovereign_operator.devcluster up|down|status|env`: the CLI without `sovereign`."""

from .cli import cluster

if __name__ == "__main__":
    cluster(prog_name="python -m sovereign_operator.devcluster")
