"""``python -m bench``: the forwarding benchmark (same as ``sealroom bench``)."""

from .cli import main

raise SystemExit(main())
