"""A moto server that runs the state machines started in it: ``python -m tests.template.moto_sfn_server
PORT``. Their AWS SDK tasks call this same server (moto's Step Functions interpreter reaches the server at
MOTO_PORT), so an execution really registers targets in the target groups moto holds.

Step Functions names the SDK integration of Elastic Load Balancing v2 ``elasticloadbalancingv2``;
boto3 calls that service ``elbv2``, and moto's interpreter knows no such translation: it is added here.
"""

import os
import sys


def main() -> None:
    port = sys.argv[1]
    os.environ["MOTO_PORT"] = port
    from moto.core.config import default_user_config
    from moto.server import main as serve
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service import (
        StateTaskService,
    )

    default_user_config["stepfunctions"]["execute_state_machine"] = True
    StateTaskService._SERVICE_NAME_SFN_TO_BOTO_OVERRIDES["elasticloadbalancingv2"] = "elbv2"
    serve(["-H", "127.0.0.1", "-p", port])


if __name__ == "__main__":
    main()
