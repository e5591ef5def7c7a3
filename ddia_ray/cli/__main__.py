"""``python -m ddia_ray.cli``: the ``ddia-ray`` command without the installed script."""

from . import main

raise SystemExit(main())
