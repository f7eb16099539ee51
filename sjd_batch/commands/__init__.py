"""One module per `sjd-batch` subcommand (see `sjd_batch/cli.py`)."""
