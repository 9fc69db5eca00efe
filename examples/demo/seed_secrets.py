"""Writes the demo's example secrets (secrets.json) into Secrets Manager (the local emulator),
creating or updating each one. Uses boto3 and the standard AWS_* environment."""
import json
import sys

import boto3

client = boto3.client("secretsmanager")
with open(sys.argv[1]) as f:
    secrets = json.load(f)
for name, value in secrets.items():
    try:
        client.create_secret(Name=name, SecretString=value)
        print(f"created {name}")
    except client.exceptions.ResourceExistsException:
        client.put_secret_value(SecretId=name, SecretString=value)
        print(f"updated {name}")
