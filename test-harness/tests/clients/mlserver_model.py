"""Trains a tiny scikit-learn model and writes an MLServer model repository that serves it.

    .venv/bin/python test-harness/tests/clients/mlserver_model.py --out DIR --http-port P --grpc-port Q \
        [--model finance-risk --model fraud-detector]

DIR/settings.json binds MLServer to 127.0.0.1 (REST on P, gRPC on Q, no metrics server, inference in the
server process); DIR/<model>/ holds model.joblib and model-settings.json (runtime mlserver_sklearn.SKLearnModel)
for each --model, all the same classifier: a LogisticRegression over two features that answers 1 when their
sum is large. Then `mlserver start DIR` serves them on the KServe v2 protocol
(POST /v2/models/<model>/infer, POST /v2/repository/index, GET /v2/health/ready).
Used by test-harness/tests/e2e_model_servers.rs and `make demo BACKEND=mlserver` (envoy/demo.sh).
"""

import argparse
import json
import os

import joblib
from sklearn.linear_model import LogisticRegression

# Eight points on two features: class 1 when x0 + x1 is large. Separable, so the answers are stable.
X = [[0.0, 0.1], [0.2, 0.0], [0.1, 0.3], [0.3, 0.2], [0.9, 0.8], [1.0, 0.7], [0.8, 1.0], [0.7, 0.9]]
Y = [0, 0, 0, 0, 1, 1, 1, 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--grpc-port", type=int, required=True)
    ap.add_argument("--model", action="append", help="a model name (repeatable); default finance-risk")
    args = ap.parse_args()
    models = args.model or ["finance-risk"]

    clf = LogisticRegression().fit(X, Y)
    os.makedirs(args.out, exist_ok=True)
    settings = {
        "host": "127.0.0.1",
        "http_port": args.http_port,
        "grpc_port": args.grpc_port,
        # No metrics server (it would take a third port), no worker processes: quicker to start, and one
        # process to stop.
        "metrics_endpoint": None,
        "parallel_workers": 0,
        "debug": False,
    }
    with open(os.path.join(args.out, "settings.json"), "w") as f:
        json.dump(settings, f, indent=2)
    for name in models:
        d = os.path.join(args.out, name)
        os.makedirs(d, exist_ok=True)
        joblib.dump(clf, os.path.join(d, "model.joblib"))
        model_settings = {
            "name": name,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": "1"},
        }
        with open(os.path.join(d, "model-settings.json"), "w") as f:
            json.dump(model_settings, f, indent=2)
    print(f"mlserver_model: {', '.join(models)} in {args.out} (http 127.0.0.1:{args.http_port}, grpc :{args.grpc_port})")


if __name__ == "__main__":
    main()
