"""The `sovereign` subcommands, one module each; `sovereign_operator.cli` assembles them."""
