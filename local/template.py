"""Read template.yaml as CloudFormation sees it after the AWS::LanguageExtensions transform.

cfn-lint (a dev dependency) does both halves: ``cfnlint.decode`` parses the YAML (short-form intrinsics such as
``!Ref`` in their long JSON form, duplicate keys rejected, dates kept as strings), and its language-extensions
transform expands every ``Fn::ForEach`` (and resolves the ``Fn::FindInMap`` lookups in them) the way
CloudFormation does before SAM's transform runs. What comes back is plain dicts, lists and strings.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import cfnlint.decode
from cfnlint.template import Template
from cfnlint.template.transforms._language_extensions import language_extension

__all__ = ["TemplateError", "load_template"]


class TemplateError(ValueError):
    """The file is not a template cfn-lint can read and expand."""


def load_template(path: str | Path) -> dict[str, Any]:
    """The template at ``path``, its Fn::ForEach loops expanded; raises TemplateError with cfn-lint's words."""
    path = str(path)
    decoded, problems = cfnlint.decode.decode(path)
    if problems or not isinstance(decoded, dict):
        raise TemplateError("; ".join(f"{path}:{m.linenumber}: {m.message}" for m in problems) or
                            f"{path}: a template must be a mapping")
    try:
        cfn = Template(path, copy.deepcopy(decoded), ["us-east-1"])
    except Exception as exc:  # noqa: BLE001 - cfn-lint's own failure on a malformed section: say where
        raise TemplateError(f"{path}: cfn-lint cannot read it: {type(exc).__name__}: {exc}") from None
    cfn.template = decoded   # Template() normalizes what it reads (it reorders Fn::Equals): expand the text as written
    problems, expanded = language_extension(cfn)
    if problems:
        raise TemplateError("; ".join(m.message for m in problems))
    # cfn-lint's node types (they carry positions) to plain data; an unquoted date (2010-09-09) is text, as in
    # CloudFormation.
    return json.loads(json.dumps(expanded, default=lambda value: value.isoformat()))
