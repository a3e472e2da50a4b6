"""``python -m bench``: the forwarding benchmark (same as ``sealroom bench``).

``sealroom bench cluster …`` (= ``python -m bench cluster …``) runs ``bench.cluster``
instead: rooms spread over several nodes through Redis (docs/BENCHMARKS.md "Several
nodes")."""

import sys

if sys.argv[1:2] == ["cluster"]:
    from .cluster import main as cluster_main

    raise SystemExit(cluster_main(sys.argv[2:]))

from .cli import main  # the forwarding benchmark, the default

raise SystemExit(main())
