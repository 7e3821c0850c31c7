"""The probe-endpoints Lambda: every endpoint on every protocol (workflow.probe_endpoints)."""

from mirrorkeeper.verify import workflow
from mirrorkeeper.verify.lambdas import lambda_handler

handler = lambda_handler(workflow.probe_endpoints)
