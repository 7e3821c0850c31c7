"""The diff-manifests Lambda: listing and manifest against what S3 holds (workflow.diff_manifests)."""

from mirrorkeeper import workflow
from mirrorkeeper.lambdas import lambda_handler

handler = lambda_handler(workflow.diff_manifests)
