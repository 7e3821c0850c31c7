"""Reading template.yaml as CloudFormation does: the Fn::ForEach loops expanded, then the short-form
`!` tags, conditions, mappings and intrinsic functions resolved for one set of parameter values.
Enough of CloudFormation to check the template's wiring and to deploy its resources into the moto
server; not a general engine.

The loops are expanded by SAM CLI's implementation of the AWS::LanguageExtensions transform (the one
`sam build --language-extensions` runs), through devtools/expand_template.py in the SAM CLI's own
virtualenv (`make tools`): moto's CloudFormation does not run that transform, and a second
implementation here could agree with itself rather than with AWS."""

import functools
import ipaddress
import itertools
import json
import re
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
SAM_PYTHON = ROOT / ".venv/tools/sam/bin/python"
EXPAND = ROOT / "devtools/expand_template.py"
NO_VALUE = object()  # AWS::NoValue: the property is dropped


class _Loader(yaml.SafeLoader):
    """SafeLoader that turns `!Ref x` / `!Sub ...` into the long form CloudFormation uses."""


def _short_form(loader: _Loader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_Loader.add_multi_constructor("!", _short_form)


def load_raw_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template as written: its Fn::ForEach loops not expanded."""
    loaded = yaml.load(path.read_text(), Loader=_Loader)  # a SafeLoader subclass
    assert isinstance(loaded, dict)
    return loaded


def load_template(parameters: Mapping[str, str] | None = None) -> dict[str, Any]:
    """template.yaml as CloudFormation reads it after AWS::LanguageExtensions: the loops expanded for
    these parameter values (the others at their defaults). Only the SAM transform is left."""
    (expanded,) = expand_templates([dict(parameters or {})])
    return expanded


def expand_templates(parameter_sets: list[dict[str, str]], sam: bool = False) -> list[dict[str, Any]]:
    """One expansion of template.yaml per set of parameter values, from one run of the expansion;
    ``sam``: through SAM's transform too, as CloudFormation deploys it."""
    return json.loads(_expand(json.dumps(parameter_sets, sort_keys=True), sam))  # type: ignore[no-any-return]


@functools.cache
def _expand(parameter_sets: str, sam: bool) -> str:
    if not SAM_PYTHON.exists():
        raise RuntimeError(f"{SAM_PYTHON.relative_to(ROOT)} is missing: `make tools` installs the SAM CLI")
    done = subprocess.run(
        [SAM_PYTHON, EXPAND, TEMPLATE, "--sets", parameter_sets, *(["--sam"] if sam else [])],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"expanding {TEMPLATE.name} failed:\n{done.stderr}")
    return done.stdout


def walk(value: Any) -> Iterator[Any]:
    """Every node of a parsed template value, depth first."""
    yield value
    if isinstance(value, dict):
        for child in value.values():
            yield from walk(child)
    elif isinstance(value, list):
        for child in value:
            yield from walk(child)


_SUB_VAR = re.compile(r"\$\{([^}!][^}]*)\}")


def references(value: Any) -> set[str]:
    """Logical ids and parameters a value refers to (Ref, GetAtt, names inside Sub)."""
    found: set[str] = set()
    for node in walk(value):
        if not isinstance(node, dict) or len(node) != 1:
            continue
        ((key, arg),) = node.items()
        if key == "Ref" and isinstance(arg, str):
            found.add(arg)
        elif key == "Fn::GetAtt":
            found.add(arg[0])
        elif key == "Fn::Sub":
            text, local = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            found |= {m.split(".")[0] for m in _SUB_VAR.findall(text) if m.split(".")[0] not in local}
    return {name for name in found if not name.startswith("AWS::")}


class Resolver:
    """Resolves intrinsic functions for fixed parameter values and known resource identities."""

    def __init__(self, template: Mapping[str, Any], parameters: Mapping[str, Any], pseudo: Mapping[str, str]) -> None:
        self.template = template
        self.values: dict[str, Any] = {}
        for name, spec in template.get("Parameters", {}).items():
            value = parameters.get(name, spec.get("Default"))
            if value is None:
                raise KeyError(f"parameter {name} has no default: give it a value")
            if spec["Type"] == "CommaDelimitedList":
                value = [v for v in str(value).split(",")] if value != "" else [""]
            self.values[name] = value
        self.values.update(pseudo)
        self.refs: dict[str, Any] = {}  # logical id -> what Ref returns
        self.attrs: dict[str, dict[str, Any]] = {}  # logical id -> GetAtt attributes
        # a condition may name others (`Condition: X`), so each is decided when first asked for
        self.conditions: dict[str, bool] = {}
        for name in template.get("Conditions", {}):
            self._condition(name)

    def _condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = bool(self.resolve(self.template["Conditions"][name]))
        return self.conditions[name]

    def active(self, logical_id: str) -> bool:
        condition = self.template["Resources"][logical_id].get("Condition")
        return condition is None or bool(self.conditions[condition])

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [v for v in (self.resolve(item) for item in value) if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            handler = self._functions().get(key)
            if handler is not None:
                return handler(arg)
        return {k: r for k, v in value.items() if (r := self.resolve(v)) is not NO_VALUE}

    def _functions(self) -> dict[str, Callable[[Any], Any]]:
        return {
            "Ref": self._ref,
            "Fn::GetAtt": lambda a: self.attrs[a[0]][a[1]],
            "Fn::Sub": self._sub,
            "Fn::If": lambda a: self.resolve(a[1] if self._condition(a[0]) else a[2]),
            "Fn::Equals": lambda a: self.resolve(a[0]) == self.resolve(a[1]),
            "Fn::Not": lambda a: not self.resolve(a[0]),
            "Fn::And": lambda a: all(self.resolve(x) for x in a),
            "Fn::Or": lambda a: any(self.resolve(x) for x in a),
            "Condition": self._condition,
            "Fn::Join": lambda a: a[0].join(str(x) for x in self.resolve(a[1])),
            "Fn::Select": lambda a: self.resolve(a[1])[int(self.resolve(a[0]))],
            "Fn::Split": lambda a: str(self.resolve(a[1])).split(a[0]),
            "Fn::FindInMap": lambda a: self.template["Mappings"][self.resolve(a[0])][str(self.resolve(a[1]))][
                self.resolve(a[2])
            ],
            "Fn::GetAZs": lambda a: [f"{self.values['AWS::Region']}{z}" for z in "abc"],
            "Fn::Cidr": lambda a: cidr(self.resolve(a[0]), int(self.resolve(a[1])), int(self.resolve(a[2]))),
            # (the Rules section's)
            "Fn::EachMemberEquals": lambda a: all(v == self.resolve(a[1]) for v in self.resolve(a[0])),
        }

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.values:
            return self.values[name]
        return self.refs[name]

    def _sub(self, arg: Any) -> str:
        text, local = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in local:
                return str(local[name])
            if "." in name and not name.startswith("AWS::"):
                logical_id, attribute = name.split(".", 1)
                return str(self.attrs[logical_id][attribute])
            return str(self._ref(name))

        return _SUB_VAR.sub(replace, text).replace("${!", "${")


class StandInAttributes(dict[str, Any]):
    """A resource's GetAtt attributes for a resolver: those a test knows, and for any other a name that
    says where it came from."""

    def __init__(self, logical_id: str, known: Mapping[str, Any]) -> None:
        super().__init__(known)
        self.logical_id = logical_id

    def __missing__(self, attribute: str) -> str:
        return f"{self.logical_id}.{attribute}"


def cidr(block: str, count: int, host_bits: int) -> list[str]:
    """Fn::Cidr: the first `count` blocks of `host_bits` host bits each (a /64 has 64) in `block`."""
    network = ipaddress.ip_network(block)
    blocks = network.subnets(new_prefix=network.max_prefixlen - host_bits)
    return [str(b) for b in itertools.islice(blocks, count)]


def resources_of_type(template: Mapping[str, Any], *types: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] in types}


def policy_statements(resource: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every IAM statement a role or function grants (inline policies and SAM Statement policies), those
    of a policy under a condition (Fn::If) included."""
    props = resource.get("Properties", {})
    for policy in (branch for written in props.get("Policies", []) for branch in _branches(written)):
        if isinstance(policy, dict) and "PolicyDocument" in policy:
            yield from policy["PolicyDocument"]["Statement"]
        elif isinstance(policy, dict) and "Statement" in policy:
            yield from policy["Statement"]


def _branches(value: Any) -> list[Any]:
    """The values a Fn::If may take (and a value that is none: itself)."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        return [chosen for branch in value["Fn::If"][1:] for chosen in _branches(branch)]
    return [value]


def allows(statements: Iterable[Mapping[str, Any]], action: str, arn: str) -> bool:
    """Whether these resolved Allow statements grant ``action`` on ``arn``, as IAM matches them: ``*``
    is any run of characters ("/" too), ``?`` one."""

    def matches(pattern: str) -> bool:
        return (
            re.fullmatch(".*".join(".".join(map(re.escape, p.split("?"))) for p in pattern.split("*")), arn) is not None
        )

    return any(
        statement["Effect"] == "Allow"
        and action in as_list(statement["Action"])
        and any(matches(pattern) for pattern in as_list(statement["Resource"]))
        for statement in statements
    )


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
