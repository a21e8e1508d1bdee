"""`python -m consentry.cli` runs the CLI (used by tests that need a real process)."""

from consentry.cli.main import main

main()
