"""Step Functions' walk over ``statemachine/verify.asl.json`` with the Lambda handlers called in
process: moto runs state machines, but its Lambda needs Docker to run a function, which is not
here. It covers the parts of the Amazon States Language the definition uses: Pass and Task with
Parameters (``.$`` paths), ResultSelector, ResultPath, Catch; Map with ItemsPath, ItemSelector,
MaxConcurrency and an inline ItemProcessor. A state it does not know fails the test.
"""

import importlib.util
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

Handler = Callable[[Any], Any]
REPO = Path(__file__).resolve().parents[1]
# Each Task state's function (functions/<name>/app.py), as template.yaml substitutes their ARNs.
FUNCTIONS = {
    "ListMirrors": "list_mirrors",
    "DiffManifests": "diff_manifests",
    "ProbeEndpoints": "probe_endpoints",
    "PublishHealth": "publish_health",
    "PublishHost": "publish_host",
}


@dataclass
class FakeLambdaContext:
    """The attributes Powertools reads from Lambda's context object."""

    function_name: str = "mirrorkeeper-verify"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:mirrorkeeper-verify"
    aws_request_id: str = "5f7e1c9a-0000-4000-8000-000000000000"


def load_handler(name: str) -> Handler:
    path = REPO / "functions" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"lambda_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return partial(module.handler, context=FakeLambdaContext())


@dataclass
class Workflow:
    definition: dict[str, Any]
    handlers: dict[str, Handler]


def deployed_workflow() -> Workflow:
    """The state machine and its functions' handlers (their settings: this process's environment)."""
    definition = json.loads((REPO / "statemachine" / "verify.asl.json").read_text())
    return Workflow(definition, {state: load_handler(name) for state, name in FUNCTIONS.items()})


def execute(workflow: Workflow, trigger: dict[str, Any]) -> Any:
    """One execution, started with ``trigger``: its final document (or the exception that failed it)."""
    return run(workflow.definition, trigger, workflow.handlers, {"Execution": {"Input": trigger}})


def path_value(path: str, document: Any, context: dict[str, Any]) -> Any:
    """``$.a.b`` in ``document``, ``$$.a.b`` in the context object."""
    root, rest = (context, path[2:]) if path.startswith("$$") else (document, path[1:])
    for key in filter(None, rest.split(".")):
        root = root[key]
    return root


def fill(template: dict[str, Any], document: Any, context: dict[str, Any]) -> dict[str, Any]:
    return {
        key.removesuffix(".$"): path_value(value, document, context) if key.endswith(".$") else value
        for key, value in template.items()
    }


def place(document: Any, result_path: str, result: Any) -> Any:
    """Put ``result`` at ``result_path`` of a copy of ``document`` (``$`` replaces it)."""
    if result_path == "$":
        return result
    out = dict(document)
    out[result_path.removeprefix("$.")] = result
    return out


def run(machine: dict[str, Any], document: Any, handlers: dict[str, Handler], context: dict[str, Any]) -> Any:
    name = machine["StartAt"]
    while True:
        state = machine["States"][name]
        kind = state["Type"]
        given = fill(state["Parameters"], document, context) if "Parameters" in state else document
        nxt = state.get("Next")
        if kind == "Pass":
            document = place(document, state.get("ResultPath", "$"), given)
        elif kind == "Task":
            try:
                result = handlers[name](given)
            except Exception as exc:
                catch = next((c for c in state.get("Catch", []) if "States.ALL" in c["ErrorEquals"]), None)
                if catch is None:
                    raise  # the execution fails
                result, nxt = {"Error": type(exc).__name__, "Cause": str(exc)}, catch["Next"]
                document = place(document, catch["ResultPath"], result)
            else:
                if "ResultSelector" in state:
                    result = fill(state["ResultSelector"], result, context)
                document = place(document, state["ResultPath"], result)
        elif kind == "Map":
            document = place(document, state["ResultPath"], run_map(state, document, handlers, context))
        else:
            raise AssertionError(f"state {name}: type {kind} is not walked here")
        if state.get("End"):
            return document
        name = nxt


def run_map(state: dict[str, Any], document: Any, handlers: dict[str, Handler], context: dict[str, Any]) -> list[Any]:
    items = path_value(state["ItemsPath"], document, context)

    def item(index_value: tuple[int, Any]) -> Any:
        index, value = index_value
        item_context = context | {"Map": {"Item": {"Index": index, "Value": value}}}
        selected = fill(state["ItemSelector"], document, item_context)
        return run(state["ItemProcessor"], selected, handlers, item_context)

    with ThreadPoolExecutor(max(1, min(state["MaxConcurrency"], len(items)))) as pool:
        return list(pool.map(item, enumerate(items)))
