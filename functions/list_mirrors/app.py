"""The list-mirrors Lambda: which mirrors this verify run checks (workflow.list_mirrors)."""

from mirrorkeeper.verify import workflow
from mirrorkeeper.verify.lambdas import lambda_handler

handler = lambda_handler(workflow.list_mirrors, scope="host")
