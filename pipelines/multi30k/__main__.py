"""`python -m pipelines.multi30k [--data-dir DIR] [--work-dir DIR]`: run the whole study."""

from pipelines.multi30k.results import main

if __name__ == "__main__":
    main()
