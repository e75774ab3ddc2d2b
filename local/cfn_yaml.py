"""Load a CloudFormation / SAM YAML template into plain Python data.

PyYAML rejects CloudFormation's short-form intrinsic tags (``!Ref``, ``!GetAtt``, ``!Sub``...). This loader
turns each of them into the long JSON form CloudFormation itself uses::

    !Ref Queue                 -> {"Ref": "Queue"}
    !GetAtt Queue.Arn          -> {"Fn::GetAtt": ["Queue", "Arn"]}
    !Sub "https://${Api}/x"    -> {"Fn::Sub": "https://${Api}/x"}
    !If [Cond, a, b]           -> {"Fn::If": ["Cond", "a", "b"]}
    !Condition IsProd          -> {"Condition": "IsProd"}

It also follows CloudFormation where it differs from plain YAML: duplicate mapping keys are an error, and
unquoted dates (``2010-09-09``) stay strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["CfnYamlError", "load_template", "loads"]

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class CfnYamlError(ValueError):
    """The text is not a valid CloudFormation YAML document."""


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader plus CloudFormation short tags, without timestamps, rejecting duplicate keys."""


# No implicit timestamps: CloudFormation reads `AWSTemplateFormatVersion: 2010-09-09` as a string.
_CfnLoader.yaml_implicit_resolvers = {
    first_char: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first_char, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _CfnLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise CfnYamlError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


def _intrinsic_key(tag_suffix: str) -> str:
    return tag_suffix if tag_suffix in ("Ref", "Condition") else f"Fn::{tag_suffix}"


def _construct_intrinsic(loader: _CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            # "Resource.Attribute"; the attribute itself may contain dots (Endpoint.Address).
            resource, dot, attribute = value.partition(".")
            if not dot or not resource or not attribute:
                raise CfnYamlError(f"!GetAtt needs 'Resource.Attribute', got {value!r}")
            value = [resource, attribute]
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = _construct_mapping(loader, node)
    else:  # pragma: no cover - PyYAML has only these three node kinds
        raise CfnYamlError(f"unsupported node for !{tag_suffix}")
    return {_intrinsic_key(tag_suffix): value}


_CfnLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# Any other local tag ("!Anything") is an intrinsic function short form.
_CfnLoader.add_multi_constructor("!", _construct_intrinsic)


def loads(text: str) -> dict[str, Any]:
    """Parse template text; the document must be a mapping."""
    try:
        data = yaml.load(text, Loader=_CfnLoader)  # noqa: S506 - _CfnLoader derives from SafeLoader
    except yaml.YAMLError as exc:
        raise CfnYamlError(str(exc)) from exc
    if not isinstance(data, dict):
        raise CfnYamlError("a template must be a YAML mapping")
    return data


def load_template(path: str | Path) -> dict[str, Any]:
    """Read a CloudFormation/SAM template file (YAML or JSON, since JSON is YAML) into a dict."""
    return loads(Path(path).read_text(encoding="utf-8"))
