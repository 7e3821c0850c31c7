"""Print a template with its Fn::ForEach loops expanded (the AWS::LanguageExtensions transform) as JSON;
everything else stays as written, SAM's transform included. Runs with the SAM CLI's Python
(.venv/tools/sam/bin/python): the expansion is SAM CLI's own, the one `sam build` and `sam validate`
run with --language-extensions.

    expand_template.py TEMPLATE                 expanded for the parameters' defaults
    expand_template.py TEMPLATE --sets JSON     a JSON list of expansions, one per object of parameter
                                                values in JSON, e.g. '[{"FtpPassivePorts": "4"}]'
    expand_template.py ... --sam                each then through SAM's transform too: the template
                                                CloudFormation deploys, whose size and resources its
                                                quotas count

checkov cannot read Fn::ForEach, so `make lint-template` gives it this expansion; the template tests
read it too (tests/template/cfn.py).
"""

import argparse
import json
import os
import sys
from copy import deepcopy
from typing import Any

from samcli.lib.cfn_language_extensions.api import create_default_intrinsic_resolver
from samcli.lib.cfn_language_extensions.models import ResolutionMode, TemplateProcessingContext
from samcli.lib.cfn_language_extensions.processors import ForEachProcessor, TemplateParsingProcessor
from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform

LANGUAGE_EXTENSIONS = "AWS::LanguageExtensions"
# The local paths `sam package` uploads and replaces with S3 locations before CloudFormation runs SAM's
# transform (which takes nothing else).
PACKAGED_ARTIFACTS = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
    "AWS::Serverless::StateMachine": "DefinitionUri",
}


def expand(template: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
    """The loops expanded for these parameter values (the others at their defaults)."""
    parameters = template.get("Parameters", {})
    unknown = set(values) - set(parameters)
    if unknown:
        raise SystemExit(f"error: the template has no parameter {', '.join(sorted(unknown))}")
    given = {name: spec["Default"] for name, spec in parameters.items() if "Default" in spec} | values
    context = TemplateProcessingContext(
        fragment=deepcopy(template), parameter_values=given, resolution_mode=ResolutionMode.PARTIAL
    )
    # Only the loops: SAM CLI's full pipeline would go on to resolve every Ref and Fn::Sub it can.
    TemplateParsingProcessor().process_template(context)
    ForEachProcessor(intrinsic_resolver=create_default_intrinsic_resolver(context)).process_template(context)
    expanded = _named_references(context.fragment)
    transforms = expanded.get("Transform", [])
    rest = [t for t in ([transforms] if isinstance(transforms, str) else transforms) if t != LANGUAGE_EXTENSIONS]
    if rest:
        expanded["Transform"] = rest[0] if len(rest) == 1 else rest
    else:
        expanded.pop("Transform", None)
    return expanded


def sam_transformed(expanded: dict[str, Any]) -> dict[str, Any]:
    """An expansion as CloudFormation deploys it: its artifacts packaged, SAM's transform applied."""
    packaged = deepcopy(expanded)
    for resource in packaged["Resources"].values():
        if resource["Type"] in PACKAGED_ARTIFACTS:
            # As long as what `sam package` writes: a bucket and a key of 32 hex digits.
            resource["Properties"][PACKAGED_ARTIFACTS[resource["Type"]]] = f"s3://sam-artifacts-bucket/{'0' * 32}"
    # The translator asks boto3 for a region (it names none in the output) and for the managed
    # policies named in Policies, which this template does not use.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return transform(packaged, {}, _NoManagedPolicies())


class _NoManagedPolicies:
    def load(self) -> dict[str, str]:
        return {}


def _named_references(value: Any) -> Any:
    """`Ref` and `Fn::GetAtt` of a `Fn::Sub` without variables left (how a loop body names a resource
    of the same iteration) become plain references to that name, as the transform leaves them."""
    if isinstance(value, list):
        return [_named_references(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref" and _literal_sub(arg) is not None:
            return {"Ref": _literal_sub(arg)}
        if key == "Fn::GetAtt" and isinstance(arg, list) and _literal_sub(arg[0]) is not None:
            return {"Fn::GetAtt": [_literal_sub(arg[0]), *arg[1:]]}
    return {k: _named_references(v) for k, v in value.items()}


def _literal_sub(value: Any) -> str | None:
    if isinstance(value, dict) and set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
        text = value["Fn::Sub"]
        return None if "${" in text else text
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("template")
    parser.add_argument("--sets", help="JSON list of objects of parameter values; prints a list of expansions")
    parser.add_argument("--sam", action="store_true", help="apply SAM's transform too, as CloudFormation does")
    args = parser.parse_args()
    with open(args.template, encoding="utf-8") as file:
        template = yaml_parse(file.read())

    def output(values: dict[str, Any]) -> dict[str, Any]:
        expanded = expand(template, {k: str(v) for k, v in values.items()})
        return sam_transformed(expanded) if args.sam else expanded

    result: Any = output({}) if args.sets is None else [output(values) for values in json.loads(args.sets)]
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
