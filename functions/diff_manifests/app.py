"""The diff-manifests Lambda: listing and manifest against what S3 holds (workflow.diff_manifests)."""

from mirrorkeeper.verify import workflow
from mirrorkeeper.verify.lambdas import lambda_handler

handler = lambda_handler(workflow.diff_manifests)
