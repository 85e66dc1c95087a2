"""`python -m mailveil`: the same command as the `mailveil` script."""

from mailveil.cli import main

if __name__ == "__main__":
    main()
