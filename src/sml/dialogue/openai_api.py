"""One request to an OpenAI-compatible endpoint (vLLM, SGLang, TGI, ...), with the stdlib only: shared by the
LLM teacher (``/chat/completions``) and the remote student (``/completions``, ``/load_lora_adapter``).

Timeouts, lost connections, 429s, 5xx and replies that ``parse`` rejects (``ValueError``) are retried with
exponential backoff (0.5 s, 1 s, 2 s, ...), then fail with an error naming the endpoint and the last
problem; other 4xx fail at once, since a bad request does not get better by retrying.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request


def call(url: str, body: dict | None, parse, *, what: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60,
         max_retries: int = 3):
    """``parse(raw_bytes)`` of the reply to ``body`` posted as JSON to ``url`` (``None``: a GET); ``what``
    names the endpoint in errors (e.g. "teacher endpoint http://host/v1")."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if key := os.environ.get(api_key_env):  # local servers need no key
        headers["Authorization"] = f"Bearer {key}"
    error = "no attempt"
    for attempt in range(max_retries + 1):
        try:
            request = urllib.request.Request(url, data=data, headers=headers, method="GET" if data is None else "POST")
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                raw = response.read()
            try:
                return parse(raw)
            except ValueError as e:  # not what was asked for: a proxy's error page, a half-written body
                error = f"malformed reply ({e}): {raw[:200].decode(errors='replace')!r}"
        except urllib.error.HTTPError as e:
            error = f"HTTP {e.code}: {e.read()[:300].decode(errors='replace')}"
            if e.code != 429 and e.code < 500:
                raise RuntimeError(f"{what} rejected the request: {error}") from e
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
            error = repr(e)
        if attempt < max_retries:
            time.sleep(0.5 * 2 ** attempt)
    raise RuntimeError(f"{what} failed after {max_retries + 1} attempts (timeout {timeout_s}s each): {error}")
