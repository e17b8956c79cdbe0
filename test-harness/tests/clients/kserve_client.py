"""One KServe v2 call through mlgate with Triton's HTTP client (PyPI `tritonclient[http]`).

    MLGATE_TOKEN=<token> .venv/bin/python test-harness/tests/clients/kserve_client.py \
        --url 127.0.0.1:10000 --persona alice infer finance-risk

Calls: `infer MODEL` (POST /v2/models/MODEL/infer, two rows of the two FP32 features the model of
mlserver_model.py takes, JSON tensors: MLServer does not read Triton's binary tensor extension), `index`
(POST /v2/repository/index with the body `{}`, sent with urllib: tritonclient 2.73's
get_model_repository_index posts an empty body, which MLServer 1.7.1 refuses with 422 "Field required"),
`ready` (GET /v2/health/ready). The token, when MLGATE_TOKEN is set, goes as
`Authorization: Bearer <token>` and is never printed. Prints a transcript line (persona, call, result) and then
`RESULT <json>` for test-harness/tests/e2e_model_servers.rs to read.
"""

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

ROWS = [[0.1, 0.1], [0.9, 0.9]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="host:port")
    ap.add_argument("--persona", default="?", help="for the transcript only")
    ap.add_argument("call", choices=["infer", "index", "ready"])
    ap.add_argument("model", nargs="?")
    a = ap.parse_args()

    token = os.environ.get("MLGATE_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = httpclient.InferenceServerClient(url=a.url, network_timeout=20.0)
    result = {"persona": a.persona, "call": a.call, "model": a.model}
    try:
        if a.call == "infer":
            inp = httpclient.InferInput("predict", [len(ROWS), 2], "FP32")
            inp.set_data_from_numpy(np.array(ROWS, dtype=np.float32), binary_data=False)
            out = httpclient.InferRequestedOutput("predict", binary_data=False)
            r = client.infer(a.model, [inp], outputs=[out], headers=headers)
            predictions = r.as_numpy("predict").reshape(-1).tolist()
            response = r.get_response()
            result.update(ok=True, predictions=predictions, model_name=response.get("model_name"))
            said = f"predictions {predictions} for rows {ROWS}"
        elif a.call == "index":
            req = urllib.request.Request(f"http://{a.url}/v2/repository/index", data=b"{}", method="POST",
                                         headers={"content-type": "application/json", **headers})
            try:
                with urllib.request.urlopen(req, timeout=20) as resp:
                    index = json.load(resp)
            except urllib.error.HTTPError as e:
                body = e.read().decode("utf-8", "replace")
                try:
                    message = json.loads(body).get("error", body)
                except ValueError:
                    message = body
                raise InferenceServerException(msg=message, status=str(e.code)) from None
            result.update(ok=True, index=index)
            said = f"{len(index)} models: " + ", ".join(f"{m['name']} ({m.get('state')})" for m in index)
        else:
            ready = client.is_server_ready(headers=headers)
            result.update(ok=True, ready=ready)
            said = f"ready={ready}"
    except InferenceServerException as e:
        result.update(ok=False, status=e.status(), message=e.message())
        said = f"InferenceServerException status={e.status()} {e.message()}"
    print(f"[{a.persona}] {a.call}{' ' + a.model if a.model else ''} -> {said}")
    print("RESULT " + json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
