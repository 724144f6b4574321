"""`describe` against a real HTTP server on 127.0.0.1 that answers like an OpenAI-compatible
chat endpoint (no network, no mock of the client)."""
import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from conftest import run_cli
from pipeline.features.text import read_descriptions

SECRET = "sk-test-do-not-leak-4242"


class ChatServer:
    def __init__(self, mode="good"):
        self.mode, self.requests = mode, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                        "body": body})
                if server.mode == "garbage":
                    payload = b"<html>502 upstream error</html>"
                else:
                    ask = body["messages"][-1]["content"]
                    name = ask.split(" of an animal ")[-1].split(",")[0] if "animal" in ask else "it"
                    content = json.dumps([f"Sure, here are descriptions of {name}:",
                                          f"The animal is {name} with its whole body.",
                                          f"Legs and head move while {name}."])
                    payload = json.dumps({"id": "x", "object": "chat.completion", "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def classes(tmp_path):
    path = tmp_path / "classes.csv"
    path.write_text("id,name\n0,Walking\n1,Eating\n")
    return path


def _describe(tmp_path, classes, url, *extra):
    env_key = {**os.environ, "OPENAI_API_KEY": SECRET}
    import subprocess
    import sys
    from conftest import ROOT
    return subprocess.run([sys.executable, "-m", "pipeline", "describe", "--classes", str(classes),
                           "--endpoint", url, "--model", "tiny-llm", "--n", "2",
                           "--out", str(tmp_path / "descriptions.yaml"),
                           "--cache", str(tmp_path / "cache"), *extra],
                          cwd=ROOT, env=env_key, capture_output=True, text=True)


def test_describe_writes_the_file_then_reruns_from_its_cache(tmp_path, classes):
    server = ChatServer()
    try:
        first = _describe(tmp_path, classes, server.url)
        assert first.returncode == 0, first.stderr
        assert len(server.requests) == 2
        assert {r["path"] for r in server.requests} == {"/v1/chat/completions"}
        assert all(r["auth"] == f"Bearer {SECRET}" for r in server.requests)
        assert server.requests[0]["body"]["model"] == "tiny-llm"
        out = yaml.safe_load((tmp_path / "descriptions.yaml").read_text())
        assert list(out) == ["Walking", "Eating"] and all(len(v) == 2 for v in out.values())
        text = (tmp_path / "descriptions.yaml").read_text()
        # the text stage reads it, dropping the boilerplate opener
        desc = read_descriptions(tmp_path / "descriptions.yaml", ["walking", "eating"])
        assert desc[0] == ["The animal is Walking with its whole body."]

        second = _describe(tmp_path, classes, server.url)
        assert second.returncode == 0 and len(server.requests) == 2  # nothing asked twice
        assert (tmp_path / "descriptions.yaml").read_text() == text
        assert "2 from the cache" in second.stderr

        species = tmp_path / "species.txt"
        species.write_text("Red Fox\n")
        third = _describe(tmp_path, species, server.url, "--species")
        assert third.returncode == 0 and len(server.requests) == 3
        assert "looks like" in server.requests[-1]["body"]["messages"][-1]["content"]
        # the key is nowhere but in the header
        written = [p.read_text() for p in (tmp_path / "cache").iterdir()]
        for blob in [text, first.stderr, second.stderr, third.stderr, *written]:
            assert SECRET not in blob
    finally:
        server.close()


def test_describe_fails_clearly_when_the_server_is_down(tmp_path, classes):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    proc = _describe(tmp_path, classes, f"http://127.0.0.1:{port}/v1", "--retries", "1")
    assert proc.returncode == 2
    assert "error: cannot reach" in proc.stderr and "gave up after 2 attempts" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "descriptions.yaml").exists()


def test_describe_fails_clearly_on_garbage(tmp_path, classes):
    server = ChatServer("garbage")
    try:
        proc = _describe(tmp_path, classes, server.url, "--retries", "1")
    finally:
        server.close()
    assert proc.returncode == 2 and len(server.requests) == 2
    assert "not an OpenAI-style chat completion" in proc.stderr and "502 upstream" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "descriptions.yaml").exists()
    assert not list((tmp_path / "cache").iterdir())  # garbage is not cached


def test_describe_cli_is_listed():
    assert "describe" in run_cli("--help").stdout
