"""Deployment: the container image, the production Dagster instance and workspace, and the
CDK app (`stack.py`, `app.py`, `synth.py`). A package so the tests can import the stack."""
