"""Small helpers shared by the chapters: seeding and showing source code."""

from __future__ import annotations

import inspect
import os
import random

import numpy as np


def set_seed(seed: int) -> None:
    """Seed Python, numpy and (when installed) torch, so a chapter gives the same numbers each run."""
    random.seed(seed)
    np.random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import torch  # lazy: heavy, and utils also serves the numpy-only chapters
    except ImportError:
        return
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def show_source(obj: object) -> None:
    """Print the source of a package function or class, so a notebook shows the code it runs."""
    text = inspect.getsource(obj)
    try:  # lazy: IPython is optional; without it the source is printed
        from IPython.display import Markdown, display
    except ImportError:
        print(text)
        return
    display(Markdown(f"```python\n{text}\n```"))
