"""`python -m poolbench.cli`."""

from poolbench.cli import main

main()
