"""The publish-host Lambda: host-wide metrics, the front page and mirrors.json (workflow.publish_host)."""

from mirrorkeeper.verify import workflow
from mirrorkeeper.verify.lambdas import lambda_handler

handler = lambda_handler(workflow.publish_host, scope="host")
