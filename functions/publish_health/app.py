"""The publish-health Lambda: levels, metrics, history, status page, SNS (workflow.publish_health)."""

from mirrorkeeper.verify import workflow
from mirrorkeeper.verify.lambdas import lambda_handler

handler = lambda_handler(workflow.publish_health)
