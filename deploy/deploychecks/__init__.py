"""The deployment checks, one module per artifact; deploy/checks.py runs them."""
