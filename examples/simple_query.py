"""SimpleQuery for ``ppml submit``: see ppml/spark/examples/simple_query.py for the arguments."""

import sys

from ppml.spark.examples.simple_query import main

if __name__ == "__main__":
    sys.exit(main())
