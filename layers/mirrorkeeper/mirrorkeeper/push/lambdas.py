"""The push function behind its function URL: the Lambda event in, the handler's answer out.

Powertools as in the verify functions (verify/lambdas.py): Logger (JSON, the package's loggers
routed through it) and Tracer. Settings come from the MIRRORKEEPER_* environment and the host's
config file, read per invocation by the same function serve-push uses, so an edited mirrors.toml is
seen by the next push; the S3 client and the secrets (kept a minute) live as long as the instance.
The function URL has no authentication of its own (AuthType NONE): the push's HMAC is it.
"""

import base64
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.data_classes import LambdaFunctionUrlEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from mirrorkeeper.aws import s3_client, service_client
from mirrorkeeper.config import AwsConfig, PushConfig, load_push_config
from mirrorkeeper.push.handler import PushHandler, PushRequest
from mirrorkeeper.push.secrets import Secrets
from mirrorkeeper.push.starters import EcsSyncStarter

if TYPE_CHECKING:
    from mirrorkeeper.aws import S3Client

logger = Logger()
tracer = Tracer()
copy_config_to_registered_loggers(source_logger=logger, include={"mirrorkeeper"})


@cache
def _clients(aws: AwsConfig) -> tuple["S3Client", Secrets]:
    return s3_client(aws), Secrets(aws)


@cache
def _ecs(aws: AwsConfig) -> Any:
    return service_client("ecs", aws)  # built by the first push that starts a sync, not by every cold start


def push_handler(config: PushConfig) -> PushHandler:
    """The handler for this invocation's settings, with the instance's clients and kept secrets."""
    client, secrets = _clients(config.aws)
    starter = EcsSyncStarter(
        lambda: _ecs(config.aws),
        config.sync_cluster,
        config.sync_task_definition,
        config.sync_subnets,
        config.sync_security_groups,
        config.sync_container,
    )
    return PushHandler(config.mirrors, client, config.layout, secrets.of, starter)


def request_of(event: LambdaFunctionUrlEvent) -> PushRequest:
    """The function URL's event as the handler's request: the body as the sender's bytes (a function
    URL passes text as text and anything else base64-encoded)."""
    raw = event.body or ""
    body = base64.b64decode(raw) if event.is_base64_encoded else raw.encode()
    return PushRequest(
        method=event.request_context.http.method,
        path=event.raw_path,
        headers={name.lower(): value for name, value in event.headers.items()},
        length=len(body),
        read_body=lambda: body,
        client=event.request_context.http.source_ip,
    )


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@event_source(data_class=LambdaFunctionUrlEvent)
def handler(event: LambdaFunctionUrlEvent, context: LambdaContext) -> dict[str, Any]:
    answer = push_handler(load_push_config({})).handle(request_of(event))
    return {
        "statusCode": answer.status,
        "headers": {"Content-Type": "application/json", **answer.headers},
        "body": answer.body.decode(),
    }
