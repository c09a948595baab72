from maild.cli.main import main

# Guarded: the parse processes (multiprocessing, forkserver) import the main
# module, and must not run the command line again.
if __name__ == "__main__":
    raise SystemExit(main())
