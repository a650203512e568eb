"""The HTTP service: search, embed and predict over a saved model and an index, and the
search page (`create_app`; `omnifuse serve` runs it with uvicorn)."""

from omnifuse.serve.app import create_app
from omnifuse.serve.uploads import Limits

__all__ = ["Limits", "create_app"]
