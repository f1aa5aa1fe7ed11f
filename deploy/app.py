"""The CDK app: `python deploy/app.py` (or `cdk synth` from deploy/, cdk.json) writes
deploy/cdk.out/TradingStack.template.json. No CDK CLI, Docker or AWS account is needed.

Context (all optional): `certificate_arn` (adds the HTTPS listener), `table_prefix`
(TRADING_DDB_TABLE_PREFIX, default `trading`). Running this file directly ignores cdk.json
and cdk.context.json: pass context with `python deploy/synth.py -c certificate_arn=...`
or the CDK_CONTEXT_JSON variable (the cdk CLI sets it from `-c`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # `python app.py` from deploy/ (cdk.json) or from the root
    sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk  # noqa: E402

from deploy.stack import STACK_NAME, TradingStack  # noqa: E402

OUTDIR = HERE / "cdk.out"


def build_app(outdir: str | Path | None = None, context: dict | None = None) -> cdk.App:
    """The app with TradingStack in it (not yet synthesised)."""
    if outdir is None and not os.environ.get("CDK_OUTDIR"):  # the cdk CLI chooses its own
        outdir = OUTDIR
    app = cdk.App(outdir=str(outdir) if outdir is not None else None, context=context or None,
                  analytics_reporting=False, stack_traces=False)
    TradingStack(app, STACK_NAME,
                 certificate_arn=app.node.try_get_context("certificate_arn") or None,
                 table_prefix=app.node.try_get_context("table_prefix") or "trading")
    return app


if __name__ == "__main__":
    build_app().synth()
