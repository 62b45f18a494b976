"""``python -m petloop`` runs the command line."""

from petloop.cli import main

if __name__ == "__main__":
    main()
