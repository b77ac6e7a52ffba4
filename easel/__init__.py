"""Easel's command line: one `easel` command with a subcommand per process and tool."""
