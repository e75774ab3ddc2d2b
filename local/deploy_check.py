"""``make deploy``'s first step: check the subscriptions file the deploy packages, as the functions will see it.

    python -m local.deploy_check [--config-env ENV] [--config FILE] [--root DIR]

Which file: each function's DESTINATION_CONFIG in template.yaml (Globals, or the function's own). Empty is the
packaged layers/common/segment_qualtrics/destination/default_subscriptions.json; /opt/python/... is a file of the common
layer (layers/common/...); /var/task/... a file of the function's CodeUri. ``--config FILE`` names the local
file instead (a path that is none of these, e.g. on a mounted file system).

Which variables: the functions' environment variables of template.yaml, each ``!Ref Parameter`` resolved
with samconfig.toml's ``[ENV.deploy.parameters] parameter_overrides`` (what ``sam deploy --config-env ENV``
passes), else the parameter's Default. Only those: the deployer's own environment plays no part.

The check is the one CLI's check-config (segment-qualtrics check-config). Exit status: 0 fine, 1 problems (listed;
do not deploy), 2 bad usage, samconfig.toml or template.yaml.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from segment_qualtrics.tools import cli

from local.template import TemplateError, load_template

PACKAGED = Path("layers/common/segment_qualtrics/destination/default_subscriptions.json")
LAYER_MOUNT, TASK_ROOT = "/opt/python/", "/var/task/"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")   # as subscriptions.py reads ${NAME}


class DeployCheckError(ValueError):
    """samconfig.toml or template.yaml cannot say what the deploy would run with."""


def parameter_overrides(samconfig: Path, env: str) -> dict[str, str]:
    """``[ENV.deploy.parameters] parameter_overrides`` as a dict (a string as SAM CLI splits it, or a list)."""
    try:
        data = tomllib.loads(samconfig.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DeployCheckError(f"{samconfig}: {exc}") from None
    section = data.get(env, {}).get("deploy", {}).get("parameters")
    if not isinstance(section, dict):
        raise DeployCheckError(f"{samconfig} has no [{env}.deploy.parameters]: ENV must name one of its environments")
    raw = section.get("parameter_overrides", [])
    pairs = shlex.split(raw) if isinstance(raw, str) else [str(p) for p in raw]
    overrides = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise DeployCheckError(f"{samconfig}: parameter_overrides wants Name=Value, got {pair!r}")
        overrides[name] = value
    return overrides


def function_environments(template: dict[str, Any], overrides: dict[str, str]
                          ) -> dict[str, tuple[dict[str, str], dict[str, str], str]]:
    """Per function: its variables that have a value now, those from a parameter without one (variable →
    parameter), and its CodeUri. A resource's name or a condition's If is no value known before the deploy."""
    parameters = template.get("Parameters", {})

    def resolve(declared: dict[str, Any], variables: dict[str, str], unset: dict[str, str]) -> None:
        for name, value in declared.items():
            variables.pop(name, None)
            unset.pop(name, None)
            if isinstance(value, bool):
                variables[name] = str(value).lower()
            elif isinstance(value, str | int | float):
                variables[name] = str(value)
            elif isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in parameters:
                parameter = value["Ref"]
                if parameter in overrides:
                    variables[name] = overrides[parameter]
                elif "Default" in parameters[parameter]:
                    variables[name] = str(parameters[parameter]["Default"])
                else:
                    unset[name] = parameter

    common: dict[str, str] = {}
    common_unset: dict[str, str] = {}
    resolve(template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}),
            common, common_unset)
    functions = {}
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") == "AWS::Serverless::Function":
            properties = resource.get("Properties", {})
            variables, unset = dict(common), dict(common_unset)
            resolve(properties.get("Environment", {}).get("Variables", {}), variables, unset)
            functions[logical_id] = (variables, unset, str(properties.get("CodeUri", "")))
    return functions


def local_file(destination_config: str, code_uri: str, root: Path) -> Path | None:
    """The repository file the deployed DESTINATION_CONFIG names; None when the package holds no such path."""
    if not destination_config:
        return root / PACKAGED
    if destination_config.startswith(LAYER_MOUNT):
        return root / "layers" / "common" / destination_config.removeprefix(LAYER_MOUNT)
    if destination_config.startswith(TASK_ROOT) and code_uri:
        return root / code_uri / destination_config.removeprefix(TASK_ROOT)
    return None


def _referenced(path: Path) -> set[str]:
    try:
        return set(_VARIABLE.findall(path.read_text()))
    except OSError:
        return set()   # check-config says why it cannot be read


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    parser = argparse.ArgumentParser(prog="python -m local.deploy_check", description=__doc__.split("\n")[0])
    parser.add_argument("--config-env", default="default", help="samconfig.toml environment (default: default)")
    parser.add_argument("--config", type=Path, help="the local file standing for DESTINATION_CONFIG")
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository (default: .)")
    args = parser.parse_args(argv)
    try:
        overrides = parameter_overrides(args.root / "samconfig.toml", args.config_env)
        functions = function_environments(load_template(args.root / "template.yaml"), overrides)
    except (DeployCheckError, TemplateError, OSError) as exc:
        print(f"error: {exc}", file=err)
        return 2

    # One check per distinct (file, variables): every function of the packaged default gives the same one.
    checks: dict[tuple[Path, tuple[tuple[str, str], ...]], list[str]] = {}
    unset: dict[str, str] = {}
    for logical_id, (variables, no_value, code_uri) in functions.items():
        unset.update(no_value)
        path = args.config or local_file(variables.get("DESTINATION_CONFIG", ""), code_uri, args.root)
        if path is None:
            print(f"error: {logical_id}'s DESTINATION_CONFIG {variables['DESTINATION_CONFIG']!r} is not a path of "
                  f"the package ({LAYER_MOUNT}... or {TASK_ROOT}...): name the local file it stands for with "
                  "make deploy CONFIG=path", file=err)
            return 2
        used = _referenced(path)   # what differs between functions but no ${...} reads is no reason to check twice
        env = {k: v for k, v in variables.items() if k in used}
        checks.setdefault((path, tuple(sorted(env.items()))), []).append(logical_id)

    status = 0
    for (path, env), logical_ids in checks.items():
        print(f"make deploy ({args.config_env}): checking {path} for {', '.join(logical_ids)}", file=out)
        found = cli.main(["check-config", str(path), *(f"--env={k}={v}" for k, v in env)],
                         environ={}, out=out, err=err)
        if found:
            status = max(status, found)
            for variable, parameter in sorted((v, p) for v, p in unset.items() if v not in dict(env)):
                print(f"hint: {variable} comes from the template parameter {parameter}, which has no default and no "
                      f"value in samconfig.toml [{args.config_env}.deploy.parameters] parameter_overrides: "
                      f"add {parameter}=...", file=err)
    if status:
        print("make deploy stopped before sam deploy: fix the subscriptions file (every problem is listed above); "
              "nothing was deployed.", file=err)
    return status


if __name__ == "__main__":
    sys.exit(main())
