"""``python -m kernelwatch``: the same command line as ``kernelwatch``."""

from kernelwatch.cli.main import main

main()
