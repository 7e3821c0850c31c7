"""The one adapter between Lambda and the verify steps (functions/<name>/app.py each wrap one step).

Powertools as its docs show it: Logger (JSON, the trigger's id as correlation id, the package's
own loggers routed through it) and Tracer here; metrics leave as EMF through Powertools'
EphemeralMetrics in mirrorkeeper.verify.metrics, one document per dimension set (Mirror, or Mirror and
Protocol), which a single module-level Metrics object cannot express. Settings come from the
MIRRORKEEPER_* environment and the host's config file (MIRRORKEEPER_CONFIG, in the bucket), read
per invocation by the same function the command line uses, so an edited mirrors.toml is seen by the
next run without a redeploy of the functions. A mirror's step reads the settings of the mirror its
event names; the host's steps (list-mirrors, publish-host) the host's.
"""

from collections.abc import Callable
from typing import Any, Literal

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from mirrorkeeper.verify.workflow import Deps, HostDeps

logger = Logger()
tracer = Tracer()
copy_config_to_registered_loggers(source_logger=logger, include={"mirrorkeeper"})

Step = Callable[[Any, Deps], dict[str, Any]]
Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


def lambda_handler(step: Step, scope: Literal["mirror", "host"] = "mirror") -> Handler:
    """A Lambda handler running ``step`` for the mirror its event names (``scope`` "mirror") or for
    the host; a malformed event raises InvalidEventError, which the state machine does not retry (its
    Retry names only Lambda service errors)."""

    @logger.inject_lambda_context(correlation_id_path="trigger.id")
    @tracer.capture_lambda_handler
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        deps = HostDeps.load({}, metrics="emf")
        mirror = event.get("mirror", "") if isinstance(event, dict) else ""
        logger.append_keys(mirror=mirror or None)
        return step(event, deps.host if scope == "host" else deps.mirror(mirror if isinstance(mirror, str) else ""))

    return handler
