"""One call through mlgate with the official OpenAI Python SDK, as a user of the gateway would make it.

    OPENAI_API_KEY=<token> .venv/bin/python test-harness/tests/clients/openai_client.py \
        --base-url http://127.0.0.1:10000/v1 --persona alice stream gpt-4o-mini "hello there"

Calls: `stream MODEL PROMPT` (chat completion with stream=True), `create MODEL PROMPT` (without), `models`
(client.models.list()). The SDK sends the key as `Authorization: Bearer <key>`, which mlgate validates; it is
never printed. Prints a transcript line (persona, call, result) and then `RESULT <json>` for
test-harness/tests/e2e_model_servers.rs to read.
"""

import argparse
import json
import os
import sys
import time

import openai


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--persona", default="?", help="for the transcript only")
    ap.add_argument("call", choices=["stream", "create", "models"])
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()

    # No retries: each line of the transcript is one request.
    client = openai.OpenAI(base_url=a.base_url, api_key=os.environ["OPENAI_API_KEY"], max_retries=0, timeout=20)
    if a.call == "models":
        call = "client.models.list()"
    else:
        model, prompt = a.args
        call = f"client.chat.completions.create(model={model!r}, stream={a.call == 'stream'})"
    result = {"persona": a.persona, "call": call}
    try:
        if a.call == "models":
            ids = [m.id for m in client.models.list()]
            result.update(ok=True, models=ids)
            said = f"{len(ids)} models: {', '.join(ids)}"
        elif a.call == "create":
            r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}])
            result.update(ok=True, object=r.object, model=r.model, content=r.choices[0].message.content,
                          finish_reason=r.choices[0].finish_reason)
            said = f"{r.object}: {r.choices[0].message.content!r}"
        else:
            stream = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": prompt}], stream=True)
            parts, arrivals, finish, objects, identity = [], [], None, set(), None
            for chunk in stream:
                arrivals.append(time.monotonic())
                objects.add(chunk.object)
                # The demo backend's first chunk says what reached it (an extra field the SDK keeps).
                extra = getattr(chunk, "model_extra", None) or {}
                if identity is None and "identity" in extra:
                    identity = extra["identity"]
                for choice in chunk.choices:
                    if choice.delta.content:
                        parts.append(choice.delta.content)
                    finish = choice.finish_reason or finish
            content = "".join(parts)
            spread_ms = round((arrivals[-1] - arrivals[0]) * 1000) if arrivals else 0
            result.update(ok=True, chunks=len(arrivals), content=content, finish_reason=finish,
                          objects=sorted(objects), arrival_spread_ms=spread_ms, identity=identity)
            said = f"{len(arrivals)} chunks over {spread_ms} ms, reassembled: {content!r}"
    except openai.APIStatusError as e:
        # e.body is only the answer's "error" field; mlgate's reason is beside it.
        try:
            body = e.response.json()
        except ValueError:
            body = {"raw": e.response.text}
        result.update(ok=False, error=type(e).__name__, status=e.status_code, body=body,
                      www_authenticate=e.response.headers.get("www-authenticate"))
        said = f"{type(e).__name__} {e.status_code} reason={body.get('reason')!r}"
    print(f"[{a.persona}] {call} -> {said}")
    print("RESULT " + json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
