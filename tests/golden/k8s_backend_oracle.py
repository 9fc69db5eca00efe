"""Apache Airflow's KubernetesSecretsBackend as the oracle for what it reads from Kubernetes Secrets.

Runs the real
`airflow.providers.cncf.kubernetes.secrets.kubernetes_secrets_backend.KubernetesSecretsBackend`
(apache-airflow-providers-cncf-kubernetes, in the Airflow 3.3.2 venv of the test assets:
$ASO_AIRFLOW33_VENV) against a cluster, constructed the way Airflow constructs it from
`[secrets] backend_kwargs`, except for one thing: its `client` (which would call
`load_incluster_config()`) is replaced by a `kubernetes.client.CoreV1Api` built from the given
kubeconfig with `kubernetes.config.load_kube_config(config_file=KUBECONFIG)`.

Usage:
  $ASO_AIRFLOW33_VENV/bin/python tests/golden/k8s_backend_oracle.py KUBECONFIG NAMESPACE \\
      [--backend-kwargs JSON] < lookups.json

  KUBECONFIG        path of a kubeconfig file (its current context is used).
  NAMESPACE         the backend's `namespace` kwarg: where it lists Secrets.
  --backend-kwargs  a JSON object of further constructor kwargs, as in `[secrets]
                    backend_kwargs`: connections_label, variables_label, config_label,
                    team_label (a label key, or null to turn that lookup off),
                    connections_data_key, variables_data_key, config_data_key (default
                    "value"). `namespace` here is overridden by NAMESPACE.

stdin: a JSON list of lookups, each
  {"kind": "connection" | "variable" | "config", "id": "...", "team": null | "..."}
  ("team" may be left out: null). It becomes the backend's `team_name` argument of
  get_conn_value / get_variable: with a team, a Secret that also carries the label
  `<team_label>=<team>` is preferred, then a Secret without the team label; without a team, only
  Secrets without the team label count, and ids shaped like `_<team>___<id>` are never found.
  get_config has no team argument in Airflow: "team" is ignored for "config".

stdout: exactly one JSON document (everything else, Airflow's logging included, goes to stderr):
  {"airflow": "3.3.2", "provider": "10.25.0", "namespace": NAMESPACE,
   "results": [one object per lookup, in input order]}
  where a result is {"kind", "id", "team"} (echoed) plus
  - connection: "core" and "sdk": what the core Connection class (API server, triggerer, DAG
    processor) and the Task SDK Connection class (task runner) make of the value, with
    `describe()` of tests/golden/airflow_oracle.py, i.e. exactly the fields that script prints
    for the SecretsManagerBackend: {"found": true, "conn_type", "host", "login", "password",
    "port", "schema", "extra" (the string), "extra_dejson" (the dict)} or
    {"found": false, "why": "no value" | exception name};
  - variable / config: "value": the string the backend returns, or null.
  When the backend itself raised (e.g. the namespace cannot be listed: 403), the lookup also has
  "error": "<ExceptionName>: <message>" (and is not found / null: Airflow's lookup loop goes on
  to the next backend in that case).

Example (a Secret labelled airflow.apache.org/connection-id=my_db with data
value=base64("postgresql://u:p@h:5432/db") in namespace demo):
  $ echo '[{"kind":"connection","id":"my_db","team":null},{"kind":"variable","id":"nope"}]' \\
      | python tests/golden/k8s_backend_oracle.py /tmp/ground/kubeconfig demo
  {"airflow": "3.3.2", "provider": "10.25.0", "namespace": "demo", "results": [
   {"kind": "connection", "id": "my_db", "team": null,
    "core": {"found": true, "conn_type": "postgres", "host": "h", "login": "u", "password": "p",
             "port": 5432, "schema": "db", "extra": null, "extra_dejson": {}},
    "sdk": {...same...}},
   {"kind": "variable", "id": "nope", "team": null, "value": null}]}

The backend lists with resource_version="0" (served from the API server's watch cache): a Secret
created a moment ago may not be seen yet; a caller that has just written one should retry
briefly. With several matching Secrets the backend takes the first one listed.
Exit status: 0 when every lookup ran (found or not), 2 on bad arguments or input, 1 when the
kubeconfig cannot be loaded (a traceback on stderr).
"""
import argparse
import json
import os
import sys

# Airflow (and its logging) may write to stdout: keep the real stdout for the result only.
_result_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
os.dup2(2, 1)
sys.stdout = sys.stderr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ of airflow_oracle in the checkout
# Sets AIRFLOW_HOME to a scratch directory and imports both Connection classes.
from airflow_oracle import CoreConnection, SdkConnection, describe  # noqa: E402

import airflow  # noqa: E402
import kubernetes  # noqa: E402
from airflow.providers.cncf.kubernetes import __version__ as provider_version  # noqa: E402
from airflow.providers.cncf.kubernetes.secrets.kubernetes_secrets_backend import (  # noqa: E402
    KubernetesSecretsBackend,
)

KINDS = ("connection", "variable", "config")


def backend_for(kubeconfig, namespace, backend_kwargs):
    kwargs = dict(backend_kwargs)
    kwargs["namespace"] = namespace
    backend = KubernetesSecretsBackend(**kwargs)
    kubernetes.config.load_kube_config(config_file=kubeconfig)
    # `client` is a cached_property: an instance attribute of the same name takes its place.
    backend.client = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient())
    return backend


def error_text(e):
    text = str(e).strip().splitlines()
    return type(e).__name__ + (": " + text[0] if text else "")


def lookup(backend, item):
    kind, key, team = item["kind"], item["id"], item.get("team")
    out = {"kind": kind, "id": key, "team": team}
    failed = None
    try:
        if kind == "connection":
            value = backend.get_conn_value(conn_id=key, team_name=team)
        elif kind == "variable":
            value = backend.get_variable(key, team_name=team)
        else:
            value = backend.get_config(key)
    except Exception as e:  # Airflow's lookup loop logs it and asks the next backend
        failed = e
        out["error"] = error_text(e)
        value = None
    if kind == "connection":
        if failed is not None:
            out["core"] = {"found": False, "why": type(failed).__name__}
            out["sdk"] = {"found": False, "why": type(failed).__name__}
        else:
            out["core"] = describe(CoreConnection, key, value)
            out["sdk"] = describe(SdkConnection, key, value)
    else:
        out["value"] = value
    return out


def bad_input(msg):
    print(f"k8s_backend_oracle: {msg}", file=sys.stderr)
    sys.exit(2)


def main():
    parser = argparse.ArgumentParser(
        description="Ask Airflow's KubernetesSecretsBackend for connections, variables and config options."
    )
    parser.add_argument("kubeconfig")
    parser.add_argument("namespace")
    parser.add_argument("--backend-kwargs", default="{}", help="JSON object of constructor kwargs")
    args = parser.parse_args()
    try:
        backend_kwargs = json.loads(args.backend_kwargs)
        lookups = json.load(sys.stdin)
    except json.JSONDecodeError as e:
        bad_input(f"not JSON: {e}")
    if not isinstance(backend_kwargs, dict):
        bad_input("--backend-kwargs must be a JSON object")
    if not isinstance(lookups, list):
        bad_input("stdin must be a JSON list of lookups")
    for item in lookups:
        if not isinstance(item, dict) or item.get("kind") not in KINDS or not isinstance(item.get("id"), str):
            bad_input(f'each lookup needs "kind" in {list(KINDS)} and a string "id": {item!r}')
        if item.get("team") is not None and not isinstance(item["team"], str):
            bad_input(f'"team" must be null or a string: {item!r}')

    backend = backend_for(args.kubeconfig, args.namespace, backend_kwargs)
    result = {
        "airflow": airflow.__version__,
        "provider": provider_version,
        "namespace": args.namespace,
        "results": [lookup(backend, item) for item in lookups],
    }
    _result_out.write(json.dumps(result) + "\n")
    _result_out.flush()


if __name__ == "__main__":
    main()
