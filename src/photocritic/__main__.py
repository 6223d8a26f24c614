"""``python -m photocritic ...`` (and ``torchrun ... -m photocritic train ...``)."""

from .cli import main

raise SystemExit(main())
