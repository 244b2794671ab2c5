"""Is the Hugging Face hub reachable? Asked once per process, with a short timeout."""
from __future__ import annotations

import functools
import os
import socket


@functools.lru_cache(maxsize=1)
def network_available(host: str = "huggingface.co", port: int = 443, timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
