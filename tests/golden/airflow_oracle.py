"""Apache Airflow as the oracle for connection and variable semantics.

Reads a JSON job on stdin:
  {"endpoint": "http://127.0.0.1:PORT", "connections_prefix": "...", "variables_prefix": "...",
   "sep": "/",
   "store": true,                 # write each secret to Secrets Manager first
   "connections": [{"id": CONN_ID, "secret": SECRET_STRING or null, "env_name": NAME or null,
                    "env_value": VALUE or null}],
   "variables":   [{"id": KEY, "secret": ..., "env_name": ..., "env_value": ...}],
   "team": TEAM,                  # optional (Airflow >= 3.3): store each secret team-scoped
                                  # (<prefix><sep><team>--<id>) and look up for that team, with
                                  # [core] multi_team = True
  }

For every entry it asks Airflow twice, the way a worker would:
  - "sm":  SecretsManagerBackend (amazon provider) reading the secret from the endpoint;
  - "env": EnvironmentVariablesBackend reading {env_name: env_value} from the environment
           (what the operator injects; an absent env_name means "not injected").
Connections are built with the core Connection class (API server, triggerer, dag processor)
and the Task SDK Connection class (task runner), and count as found only when Airflow's own
lookup would return them (get_uri() is called inside the lookup, so a connection whose get_uri
raises is not found). Prints, after a line `=== aso-oracle-result ===`, {"airflow": VERSION,
"connections": [{"id", "sm": {...}, "env": {...}}], "variables": [...]}
on stdout. Works with every Airflow of the golden tests' version matrix (3.1.8 and 3.3.2): the
classes it imports are where both versions have them. Values are compared by the caller; this script prints them only to that pipe.
"""
import atexit
import json
import os
import shutil
import sys
import tempfile
import warnings

if "AIRFLOW_HOME" not in os.environ:
    # A home of its own, removed at exit: runs leave nothing behind.
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="aso-airflow-")
    atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], ignore_errors=True)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
warnings.simplefilter("ignore")

import airflow  # noqa: E402
import boto3  # noqa: E402
from airflow.models.connection import Connection as CoreConnection  # noqa: E402
from airflow.providers.amazon.aws.secrets.secrets_manager import SecretsManagerBackend  # noqa: E402
from airflow.sdk.definitions.connection import Connection as SdkConnection  # noqa: E402
from airflow.secrets.environment_variables import EnvironmentVariablesBackend  # noqa: E402

MARKER = "=== aso-oracle-result ==="
FIELDS = ["conn_type", "host", "login", "password", "port", "schema", "extra"]


def describe(conn_class, conn_id, value):
    """What a lookup returns for a raw backend value, with the given Connection class."""
    if not value:
        return {"found": False, "why": "no value"}
    try:
        v = value.strip()
        # As the secrets backends deserialize a value (3.1.8's BaseSecretsBackend and the Task
        # SDK's, 3.3.2's _deserialize_connection_value): the core class has no from_uri and
        # takes the URI in its constructor.
        if v[0] == "{":
            conn = conn_class.from_json(conn_id=conn_id, value=v)
        elif hasattr(conn_class, "from_uri"):
            conn = conn_class.from_uri(conn_id=conn_id, uri=v)
        else:
            conn = conn_class(conn_id=conn_id, uri=v)
        conn.get_uri()
    except Exception as e:  # the lookup loop swallows every error: not found
        return {"found": False, "why": type(e).__name__}
    out = {"found": True}
    for f in FIELDS:
        val = getattr(conn, f)
        out[f] = val
    try:
        out["extra_dejson"] = conn.extra_dejson
    except Exception as e:
        out["extra_dejson"] = "error: " + type(e).__name__
    return out


TEAM = {}  # {"team_name": TEAM} for team lookups; 3.1.8's backends take no team_name


def conn_lookup(backend, conn_id):
    try:
        value = backend.get_conn_value(conn_id=conn_id, **TEAM)
    except Exception as e:
        return {"core": {"found": False, "why": type(e).__name__}, "sdk": {"found": False, "why": type(e).__name__}}
    return {"core": describe(CoreConnection, conn_id, value), "sdk": describe(SdkConnection, conn_id, value)}


def var_lookup(backend, key):
    try:
        value = backend.get_variable(key, **TEAM)
    except Exception as e:
        return {"found": False, "why": type(e).__name__}
    return {"found": value is not None, "value": value}


def main():
    job = json.load(sys.stdin)
    if job.get("team"):
        os.environ["AIRFLOW__CORE__MULTI_TEAM"] = "True"
        TEAM["team_name"] = job["team"]
    kwargs = {
        "connections_prefix": job.get("connections_prefix", "airflow/connections"),
        "variables_prefix": job.get("variables_prefix", "airflow/variables"),
        "sep": job.get("sep", "/"),
        "endpoint_url": job["endpoint"],
        "region_name": os.environ.get("AWS_REGION", "us-east-1"),
    }
    if job.get("extra_conn_words"):
        kwargs["extra_conn_words"] = job["extra_conn_words"]
    sm = SecretsManagerBackend(**kwargs)
    client = boto3.client("secretsmanager", endpoint_url=job["endpoint"], region_name=kwargs["region_name"])

    def store(prefix, entries):
        for e in entries:
            # Secrets Manager cannot hold an empty SecretString (minimum length 1).
            if not e.get("secret") or not job.get("store", True):
                continue
            sid = f"{job['team']}--{e['id']}" if job.get("team") else e["id"]
            name = sm.build_path(prefix.rstrip(kwargs["sep"]), sid, kwargs["sep"]) if prefix else sid
            try:
                client.create_secret(Name=name, SecretString=e["secret"])
            except client.exceptions.ResourceExistsException:
                client.put_secret_value(SecretId=name, SecretString=e["secret"])

    store(kwargs["connections_prefix"], job.get("connections", []))
    store(kwargs["variables_prefix"], job.get("variables", []))

    env_backend = EnvironmentVariablesBackend()
    result = {"airflow": airflow.__version__, "connections": [], "variables": []}
    for kind, entries, lookup in (
        ("connections", job.get("connections", []), conn_lookup),
        ("variables", job.get("variables", []), var_lookup),
    ):
        for e in entries:
            sm_side = lookup(sm, e["id"])
            saved = dict(os.environ)
            try:
                if e.get("env_name") is not None:
                    os.environ[e["env_name"]] = e["env_value"]
                env_side = lookup(env_backend, e["id"])
            finally:
                os.environ.clear()
                os.environ.update(saved)
            result[kind].append({"id": e["id"], "sm": sm_side, "env": env_side})
    # Airflow's own logging writes to stdout too: the result is the line after the marker.
    sys.stdout.write("\n" + MARKER + "\n" + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
