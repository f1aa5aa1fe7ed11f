"""The project's shape as checked rules (import-linter checks the layers in make test)."""

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "trading_assets"


def test_settings_is_the_only_module_that_reads_the_environment():
    readers = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if p.name != "settings.py" and re.search(r"os\.environ|os\.getenv|getenv\(", p.read_text())]
    assert readers == [], f"read settings through trading_assets.settings instead: {readers}"


def test_no_user_facing_text_names_a_seed_number():
    said = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if re.search(r"[Ss]eed 00\d", p.read_text())]
    assert said == [], f"name the flow, not the seed: {said}"
