"""`python -m nbest_rescore` runs the `rescore` CLI (also under torchrun)."""

from nbest_rescore.cli import main

if __name__ == "__main__":
    main()
