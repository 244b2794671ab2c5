"""A small OpenAI-compatible stand-in judge on 127.0.0.1, for the judge's tests and a local demo.

It speaks GET /v1/models and POST /v1/chat/completions (what bench.evaluation.judge_client
uses) and judges prompts in Arena-Hard's template (it reads the two answers between the
template's markers). Its behaviour is a set of switches, so each test builds the judge bias
it needs:

- `prefer`: "first" (always A: a pure position bias), "longer" (the longer answer, a pure
  verbosity bias; equal lengths a tie), "longer_soft" (the longer answer wins with
  probability given by a fixed function of the length gap, deterministic per request);
- `rate_limit_every`: every k-th request is answered 429 with Retry-After (a rate limit);
- `garbage_every`: every k-th answer is text without a verdict;
- `fail_after`: after that many requests every request is answered 503 (a dying server).

AlpacaEval-template prompts get the one-token answer m or M and, when the request asks for
log-probs, the first token's alternatives: P(m) = 0.8 with `prefer="first"`, else the
length-driven probability of `longer_soft`.

    python -m tests.judge_server --port 8123 --prefer longer    # serve until Ctrl-C
"""
from __future__ import annotations

import argparse
import json
import math
import re
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_A = re.compile(r"<\|The Start of Assistant A's Answer\|>\n(.*?)\n<\|The End of Assistant A's Answer\|>", re.S)
_B = re.compile(r"<\|The Start of Assistant B's Answer\|>\n(.*?)\n<\|The End of Assistant B's Answer\|>", re.S)
# AlpacaEval's template: two outputs, identifiers m (first) and M (second); the answer is one token.
_ALPACA = re.compile(r'"model_identifier": "m",\s*"output": """(.*?)"""\s*},\s*{\s*"model_identifier": "M",'
                     r'\s*"output": """(.*?)"""', re.S)


class StandInJudge(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 0, *, model: str = "stand-in-judge", prefer: str = "longer",
                 rate_limit_every: int = 0, garbage_every: int = 0, fail_after: int | None = None):
        super().__init__(("127.0.0.1", port), _Handler)
        self.model, self.prefer = model, prefer
        self.rate_limit_every, self.garbage_every, self.fail_after = rate_limit_every, garbage_every, fail_after
        self.lock = threading.Lock()
        self.requests = 0            # chat completion requests received (429s and 503s included)
        self.answered = 0            # 200 answers given
        self.thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def start(self) -> "StandInJudge":
        self.thread = threading.Thread(target=self.serve_forever, name="stand-in-judge", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def alpaca(self, user: str, number: int) -> tuple[str, dict] | None:
        """(answer, first-token log-probs) for an AlpacaEval-template prompt, else None."""
        match = _ALPACA.search(user)
        if match is None:
            return None
        p = 0.8 if self.prefer == "first" else _p_longer(len(match.group(1)), len(match.group(2)))
        u = (zlib.crc32(user.encode()) % 10_000) / 10_000
        return ("m" if u < p else "M"), {"m": math.log(p), "M": math.log(1 - p)}

    def verdict(self, user: str, number: int) -> str:
        """The judge's answer to the user message of request `number` (1-based)."""
        if self.garbage_every and number % self.garbage_every == 0:
            return "I cannot decide; both are lovely. (no verdict here)"
        a, b = _A.search(user), _B.search(user)
        if self.prefer == "first":
            return "Both fine, the first is better. My final verdict is: [[A>B]]"
        if a is None or b is None:
            return "No answers found."
        la, lb = len(a.group(1)), len(b.group(1))
        if self.prefer == "longer_soft":
            # P(longer wins) rises with the gap, fixed per request text: a verbosity bias with noise.
            u = (zlib.crc32(user.encode()) % 10_000) / 10_000
            return "[[A>B]]" if u < _p_longer(la, lb) else "[[B>A]]"
        if la == lb:
            return "My final verdict is tie: [[A=B]]"
        return "Longer is better. [[A>>B]]" if la > lb else "Longer is better. [[B>>A]]"


def _p_longer(la: int, lb: int) -> float:
    """P(A preferred) of a judge that likes length: ½ at equal length, towards 0.95 / 0.05."""
    return 0.5 + 0.45 * (2 / (1 + math.exp(-(la - lb) / 8)) - 1)


class _Handler(BaseHTTPRequestHandler):
    server: StandInJudge

    def log_message(self, *args):   # quiet
        pass

    def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.server.model, "object": "model", "created": 0,
                                                         "owned_by": "tests"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        srv = self.server
        with srv.lock:
            srv.requests += 1
            number = srv.requests
        if srv.fail_after is not None and number > srv.fail_after:
            self._send(503, {"error": {"message": "the judge is down"}})
            return
        if srv.rate_limit_every and number % srv.rate_limit_every == 0:
            self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.01"})
            return
        if body.get("model") != srv.model:
            self._send(404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}})
            return
        user = next((m["content"] for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
        alpaca = srv.alpaca(user, number)
        text, top = alpaca if alpaca is not None else (srv.verdict(user, number), None)
        with srv.lock:
            srv.answered += 1
        choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
        if body.get("logprobs") and top is not None:
            choice["logprobs"] = {"content": [{"token": text, "logprob": top[text], "bytes": None,
                                               "top_logprobs": [{"token": t, "logprob": lp, "bytes": None}
                                                                for t, lp in top.items()]}]}
        self._send(200, {"id": f"cmpl-{number}", "object": "chat.completion", "created": 0, "model": srv.model,
                         "choices": [choice],
                         "usage": {"prompt_tokens": len(user) // 4, "completion_tokens": len(text) // 4,
                                   "total_tokens": len(user) // 4 + len(text) // 4}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--model", default="stand-in-judge")
    parser.add_argument("--prefer", default="longer", choices=["first", "longer", "longer_soft"])
    parser.add_argument("--fail-after", type=int, default=None, help="answer 503 after this many requests")
    args = parser.parse_args()
    server = StandInJudge(args.port, model=args.model, prefer=args.prefer, fail_after=args.fail_after)
    print(f"stand-in judge {args.model} at {server.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()


if __name__ == "__main__":
    main()
