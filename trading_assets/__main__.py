"""`python -m trading_assets ...`: see trading_assets/cli.py."""

from trading_assets.cli import main

raise SystemExit(main())
