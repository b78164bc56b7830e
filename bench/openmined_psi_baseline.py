"""The openmined-psi baseline for bench/fl.py, run in its own virtual environment.

Usage (bench/fl.py does this; the interpreter is the baseline venv's, never ppml's)::

    python bench/openmined_psi_baseline.py --ids N [--data-structure raw|gcs] [--fpr 1e-9]

Imports only openmined.psi (``private_set_intersection``) and the standard library: openmined.psi
pins an exact protobuf that clashes with Flower's and ppml's, so it is never a ppml dependency.
Sets as in bench/fl.py: the client holds ``id-0 .. id-(N-1)``, the server ``id-(N/2) ..
id-(3N/2-1)``. One run of the ECC protocol with ``reveal_intersection=True``: server setup, client
request, server response, client intersection, each timed. Only the client learns the
intersection (openmined's protocol); the server learns the client's set size. Prints one JSON
object on stdout: seconds per phase, serialized message sizes in bytes, the intersection size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import private_set_intersection.python as psi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, required=True)
    parser.add_argument("--data-structure", choices=("raw", "gcs", "bloom"), default="raw")
    parser.add_argument("--fpr", type=float, default=1e-9, help="false-positive rate (gcs, bloom)")
    args = parser.parse_args()
    n = args.ids
    structure = {"raw": psi.DataStructure.RAW, "gcs": psi.DataStructure.GCS, "bloom": psi.DataStructure.BLOOM_FILTER}
    client_items = [f"id-{i}" for i in range(n)]
    server_items = [f"id-{i}" for i in range(n // 2, n + n // 2)]

    times = {}
    start = time.perf_counter()
    server = psi.server.CreateWithNewKey(True)
    setup = server.CreateSetupMessage(args.fpr, len(client_items), server_items, structure[args.data_structure])
    times["server_setup"] = time.perf_counter() - start

    start = time.perf_counter()
    client = psi.client.CreateWithNewKey(True)
    request = client.CreateRequest(client_items)
    times["client_request"] = time.perf_counter() - start

    start = time.perf_counter()
    response = server.ProcessRequest(request)
    times["server_response"] = time.perf_counter() - start

    start = time.perf_counter()
    intersection = client.GetIntersection(setup, response)
    times["client_intersection"] = time.perf_counter() - start

    common = sorted(client_items[i] for i in intersection)
    expected = n - n // 2
    json.dump(
        {
            "version": psi.__version__,
            "ids_per_side": n,
            "data_structure": args.data_structure,
            "fpr": args.fpr,
            "seconds": times,
            "total_seconds": sum(times.values()),
            "bytes": {
                "setup": len(setup.SerializeToString()),
                "request": len(request.SerializeToString()),
                "response": len(response.SerializeToString()),
            },
            "intersection_size": len(common),
            "intersection_ok": len(common) == expected and common == sorted(f"id-{i}" for i in range(n // 2, n)),
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
