"""Short visual descriptions of each action (or species) from an OpenAI-compatible chat
endpoint (``python -m pipeline describe``), written as the description file of the text stage.

Any server that speaks ``POST <endpoint>/chat/completions`` works: a local LLM server (vLLM,
llama.cpp, Ollama) or a hosted one. The API key, if any, is read from an environment variable
and sent only in the Authorization header: it is never logged, cached or written. Every answer
is cached under a hash of the request (model and messages, not the key), so a re-run asks
nothing twice and an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from .files import replacing
from .errors import PipelineError

log = logging.getLogger("pipeline")

SYSTEM = ("You write short visual descriptions for a vision-language model that recognises "
          "animal behaviour in videos. Answer with a JSON array of strings and nothing else.")
ASK = {
    "action": "Give {n} different one-sentence visual descriptions (at most 25 words each) of an "
              "animal {name}, as seen in a video: posture, which body parts move and how.",
    "species": "Give {n} different one-sentence visual descriptions (at most 25 words each) of "
               "what a {name} looks like: body shape, size, colour, texture.",
}


class DescribeError(PipelineError, RuntimeError):
    pass


def read_names(path) -> list[str]:
    """Names from a class/species file: the data set's ``id,name`` CSV, the pipeline's
    ``classes.tsv``, or plain text with one name per line."""
    from .annotations.readers import read_name_table
    path = Path(path)
    if not path.is_file():
        raise DescribeError(f"{path}: file not found")
    first = path.read_text(encoding="utf-8-sig").lstrip().split("\n", 1)[0].lower()
    if path.suffix == ".tsv":
        from .annotations import read_classes
        return [r["name"] for r in read_classes(path)]
    if first.startswith(("id,", "label,")):
        return read_name_table(path).names
    return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]


def chat_url(endpoint: str) -> str:
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/chat/completions") else endpoint + "/chat/completions"


def parse_answer(content: str) -> list[str]:
    """A JSON array of strings (possibly in a code fence), else one description per line."""
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", content.strip())
    try:
        value = json.loads(text)
        if isinstance(value, list):
            return [str(v).strip() for v in value if isinstance(v, (str, int, float)) and str(v).strip()]
    except ValueError:
        pass
    lines = [re.sub(r"^\s*(?:[-*\u2022]|\d+[.)])\s*", "", line).strip().strip('"') for line in text.splitlines()]
    return [line for line in lines if len(line.split()) >= 3]


def _post(url: str, payload: dict, key: str | None, timeout: float) -> str:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {key}"} if key else {})})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read().decode("utf-8", "replace")
    try:
        return json.loads(body)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise DescribeError(f"{url} answered something that is not an OpenAI-style chat "
                            f"completion: {body[:200]!r}") from None


def ask(url: str, payload: dict, key: str | None, retries: int, timeout: float) -> list[str]:
    """Descriptions for one request; connection failures, 429/5xx and unusable answers are
    retried with exponential back-off, then reported."""
    problem = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(2 ** (attempt - 1), 30))
        try:
            found = parse_answer(_post(url, payload, key, timeout))
            if found:
                return found
            problem = f"{url} answered without any description"
        except urllib.error.HTTPError as e:
            problem = f"{url} answered HTTP {e.code} {e.reason}"
            if e.code in (400, 401, 403, 404):
                hint = {401: "; is the API key variable set?", 403: "; is the API key valid?",
                        404: "; is --endpoint the API base, e.g. http://host:8000/v1?"}
                raise DescribeError(problem + hint.get(e.code, "")) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            problem = f"cannot reach {url} ({reason}); is the server running and --endpoint right?"
        except DescribeError as e:
            problem = str(e)
        log.warning("describe: attempt %d/%d failed: %s", attempt + 1, retries + 1, problem)
    raise DescribeError(f"{problem} (gave up after {retries + 1} attempts)")


def describe(names: list[str], endpoint: str, model: str, n: int = 10, kind: str = "action",
             cache_dir=".cache/describe", retries: int = 3, timeout: float = 120.0,
             api_key_env: str = "OPENAI_API_KEY", temperature: float = 0.7) -> dict[str, list[str]]:
    """name -> descriptions, asking the endpoint only for what the cache does not hold."""
    from tqdm import tqdm
    url, key = chat_url(endpoint), os.environ.get(api_key_env) or None
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    out, asked = {}, 0
    for name in tqdm(names, desc=f"describe {kind}s", unit=kind):
        payload = {"model": model, "temperature": temperature,
                   "messages": [{"role": "system", "content": SYSTEM},
                                {"role": "user", "content": ASK[kind].format(n=n, name=name.replace("_", " "))}]}
        entry = cache / (hashlib.sha256(json.dumps([url, payload], sort_keys=True).encode()).hexdigest()[:24] + ".json")
        if entry.exists():
            out[name] = json.loads(entry.read_text())["descriptions"]
            continue
        out[name] = ask(url, payload, key, retries, timeout)[:n]
        asked += 1
        with replacing(entry) as partial:
            partial.write_text(json.dumps({"name": name, "model": model, "descriptions": out[name]}, indent=1))
    log.info("describe: %d %ss, %d asked, %d from the cache (%s)", len(names), kind, asked,
             len(names) - asked, cache)
    return out


def write_descriptions(descriptions: dict[str, list[str]], path) -> Path:
    import yaml
    path = Path(path)
    with replacing(path) as partial:
        partial.write_text(yaml.safe_dump(descriptions, sort_keys=False, allow_unicode=True, width=100))
    return path
