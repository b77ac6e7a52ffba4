"""`make bench`: every benchmark, one after the other. Results are printed and saved under bench/results/."""

from bench.overhead import main

if __name__ == "__main__":
    main()
