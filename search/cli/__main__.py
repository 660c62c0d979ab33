"""``python -m search.cli``: the same as the ``search`` console script."""

from search.cli import main

main()
