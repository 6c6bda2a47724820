"""``python -m ragcycle.cli``: the same as the ``ragcycle`` console script."""

from ragcycle.cli import main

main()
