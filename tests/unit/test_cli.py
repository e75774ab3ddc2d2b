"""The one CLI (tools/cli.py: `segment-qualtrics <command>`), its subscriptions commands (config_commands.py) and
their make targets (mk/config.mk): exit codes and what they print."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from segment_qualtrics.destination.subscriptions import (
    DEFAULT_CONFIG,
    ConfigError,
    load_subscriptions,
    parse_subscriptions,
    referenced_variables,
)
from segment_qualtrics.tools.cli import main

ROOT = Path(__file__).resolve().parents[2]
VARS = {"QUALTRICS_DIRECTORY_ID": "POOL_D", "QUALTRICS_MAILING_LIST_ID": "CG_M"}
IDENTIFY = {"type": "identify", "messageId": "m-1", "userId": "user-1", "traits": {"email": "ada@example.com"}}
EXPORT = {"data": {"subscriptions": [
    {"id": "s1", "name": "Contacts", "actionSlug": "addContactToXmd", "enabled": True,
     "trigger": 'type = "identify"', "settings": {"directoryId": "POOL_1", "extRef": {"@path": "$.userId"}}},
]}}


def cli(*argv, environ=None):
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), environ={} if environ is None else environ, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def write(tmp_path, name, data) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


# --- check-config ---------------------------------------------------------------------------------

def test_check_config_passes_with_one_line_per_subscription():
    code, out, err = cli("check-config", environ=VARS)
    assert code == 0 and err == ""
    header, *lines = out.strip().splitlines()
    assert str(DEFAULT_CONFIG) in header and "4 subscription(s), 2 enabled, no problems" in header
    assert len(lines) == 4
    assert "enabled" in lines[0] and "addContactToXmd" in lines[0] and "'Create or update contact'" in lines[0]
    assert 'when type = "identify"' in lines[0] and "mapped: directoryId" in lines[0]
    assert lines[2].strip().startswith("disabled")


def test_check_config_lists_every_problem_and_names_unset_variables():
    code, out, err = cli("check-config")
    assert code == 1 and out == ""
    assert "has 3 problem(s)" in err
    assert err.count("is used but the environment variable") == 3
    hint = err.strip().splitlines()[-1]
    assert hint.startswith("unset environment variable(s): QUALTRICS_DIRECTORY_ID (used by "
                           "'Create or update contact', 'Upsert contact transaction'); QUALTRICS_MAILING_LIST_ID")
    assert "--env NAME=VALUE" in hint


def test_env_options_set_and_override_variables():
    both = ("--env", "QUALTRICS_DIRECTORY_ID=POOL_X", "--env", "QUALTRICS_MAILING_LIST_ID=CG")
    assert cli("check-config", *both)[0] == 0
    code, _, err = cli("check-config", "--env", "QUALTRICS_DIRECTORY_ID=POOL_X", environ={})
    assert code == 1 and "QUALTRICS_MAILING_LIST_ID" in err and "QUALTRICS_DIRECTORY_ID is not set" not in err


def test_a_malformed_env_option_is_a_usage_error():
    code, _, err = cli("check-config", "--env", "NO_EQUALS_SIGN", environ=VARS)
    assert code == 2 and "NAME=VALUE" in err


def test_check_config_takes_a_file_or_destination_config(tmp_path):
    bad = write(tmp_path, "bad.json", {"subscriptions": [{"name": "X", "actionSlug": "nope", "trigger": "type ="}]})
    code, _, err = cli("check-config", str(bad))
    assert code == 1 and "unknown actionSlug 'nope'" in err and "trigger" in err
    code, _, err = cli("check-config", environ={"DESTINATION_CONFIG": str(bad)})
    assert code == 1 and str(bad) in err
    code, _, err = cli("check-config", str(tmp_path / "absent.json"))
    assert code == 1 and "cannot read the file" in err


def test_check_config_checks_fixed_values_against_their_fields(tmp_path):
    config = write(tmp_path, "subs.json", {"subscriptions": [
        {"name": "Odd", "actionSlug": "upsertContactTransaction", "trigger": 'type = "track"',
         "mapping": {"directoryId": "POOL_1", "mailingListId": "CG_1", "unsubscribed": "sometimes",
                     "transactionDate": "yesterday", "embeddedData": {"@path": "$.traits"}}},
        {"name": "Off", "enabled": False, "actionSlug": "triggerXflowWorkflow", "trigger": 'type = "track"',
         "mapping": {"workflowUrl": "not a url"}}]})
    code, _, err = cli("check-config", str(config))
    assert code == 1 and "has 2 problem(s)" in err
    assert "mapping.unsubscribed: 'sometimes' does not fit the field" in err
    assert "mapping.transactionDate: 'yesterday' does not fit the field" in err
    assert "embeddedData" not in err and "'Off'" not in err   # directives vary per event; disabled ones wait


def test_unset_variables_can_be_kept_as_written_for_dry_runs():
    data = {"subscriptions": [{"name": "C", "actionSlug": "addContactToXmd", "trigger": 'type = "identify"',
                               "mapping": {"directoryId": "${NOT_SET}", "phone": "${ALSO_NOT_SET}"}}]}
    with pytest.raises(ConfigError) as caught:
        parse_subscriptions(data, environ={})
    assert caught.value.unset_variables == ["ALSO_NOT_SET", "NOT_SET"]
    [sub] = parse_subscriptions(data, environ={}, unset="keep")
    assert sub.mapping["directoryId"] == "${NOT_SET}"
    assert referenced_variables(data) == {"NOT_SET": ["C"], "ALSO_NOT_SET": ["C"]}


def test_check_config_warns_about_a_workflow_url_the_workers_would_refuse(tmp_path):
    config = write(tmp_path, "subs.json", {"subscriptions": [
        {"name": "Hook", "actionSlug": "triggerXflowWorkflow", "trigger": 'type = "track"',
         "mapping": {"workflowUrl": "https://hooks.example.com/x"}},
        {"name": "Fine", "actionSlug": "triggerXflowWorkflow", "trigger": 'type = "track"',
         "mapping": {"workflowUrl": "https://sjc1.qualtrics.com/x"}}]})
    code, _, err = cli("check-config", str(config))
    assert code == 0
    [warning] = err.strip().splitlines()
    assert "'Hook'" in warning and "workflow_url_not_allowed" in warning
    assert cli("check-config", str(config), environ={"QUALTRICS_BASE_URL": "https://hooks.example.com"})[2] == ""


# --- preview --------------------------------------------------------------------------------------

def test_preview_prints_the_dry_run(tmp_path):
    event = write(tmp_path, "identify.json", IDENTIFY)
    code, out, err = cli("preview", str(event), environ=VARS)
    assert code == 0 and err == ""
    assert "'Create or update contact' (addContactToXmd): triggered" in out
    assert "POST https://iad1.qualtrics.com/API/v3/directories/POOL_D/contacts" in out
    assert "X-API-TOKEN: ********" in out


def test_preview_json_with_datacenter_and_config(tmp_path):
    event = write(tmp_path, "identify.json", [IDENTIFY, {**IDENTIFY, "messageId": "m-2"}])
    config = write(tmp_path, "subs.json", {"subscriptions": [
        {"name": "Mine", "actionSlug": "addContactToXmd", "trigger": 'type = "identify"',
         "mapping": {"directoryId": "${DIR}"}}]})
    code, out, _ = cli("preview", str(event), "--config", str(config), "--env", "DIR=POOL_7", "--datacenter", "fra1",
                       "--json")
    assert code == 0
    data = json.loads(out)
    assert data["config"] == str(config) and data["baseUrl"] == "https://fra1.qualtrics.com"
    assert [e["messageId"] for e in data["events"]] == ["m-1", "m-2"]
    [sub] = data["events"][0]["subscriptions"]
    assert sub["requests"][0]["url"] == "https://fra1.qualtrics.com/API/v3/directories/POOL_7/contacts"


def test_preview_uses_qualtrics_base_url(tmp_path):
    event = write(tmp_path, "identify.json", IDENTIFY)
    _, out, _ = cli("preview", str(event), environ={**VARS, "QUALTRICS_BASE_URL": "http://127.0.0.1:8765"})
    assert "POST http://127.0.0.1:8765/API/v3/directories/POOL_D/contacts" in out


def test_preview_runs_with_unset_variables_and_warns(tmp_path):
    event = write(tmp_path, "identify.json", IDENTIFY)
    code, out, _ = cli("preview", str(event), "--json")
    assert code == 0
    [warning] = json.loads(out)["warnings"]
    assert "${QUALTRICS_DIRECTORY_ID}" in warning and "${QUALTRICS_MAILING_LIST_ID}" in warning


def test_preview_takes_an_api_gateway_event_from_the_events_folder():
    code, out, _ = cli("preview", str(ROOT / "events" / "ingest" / "track_transaction_created.json"), environ=VARS)
    assert code == 0 and "look the contact up" in out and "/transactions" in out


@pytest.mark.parametrize(("content", "needle"), [(None, "cannot read"), ("{oops", "not valid JSON"),
                                                 ("[]", "no events")])
def test_preview_input_errors_are_usage_errors(tmp_path, content, needle):
    path = tmp_path / "event.json"
    if content is not None:
        path.write_text(content)
    code, _, err = cli("preview", str(path), environ=VARS)
    assert code == 2 and needle in err


def test_preview_rejects_a_bad_datacenter(tmp_path):
    code, _, err = cli("preview", str(write(tmp_path, "e.json", IDENTIFY)), "--datacenter", "x.evil.com/", environ=VARS)
    assert code == 2 and "datacenter" in err


def test_preview_with_a_broken_config_lists_its_problems(tmp_path):
    config = write(tmp_path, "subs.json", {"subscriptions": [{"name": "X", "actionSlug": "nope", "trigger": "t ="}]})
    code, _, err = cli("preview", str(write(tmp_path, "e.json", IDENTIFY)), "--config", str(config))
    assert code == 1 and "unknown actionSlug" in err


# --- import-segment -------------------------------------------------------------------------------

def test_import_segment_writes_a_file_the_loader_accepts(tmp_path):
    out_path = tmp_path / "subscriptions.json"
    code, out, err = cli("import-segment", str(write(tmp_path, "export.json", EXPORT)), "-o", str(out_path))
    assert code == 0 and out == ""
    assert f"imported 1 subscription(s) into {out_path}" in err
    [sub] = load_subscriptions(out_path, environ={})
    assert sub.name == "Contacts" and sub.mapping == EXPORT["data"]["subscriptions"][0]["settings"]
    assert cli("check-config", str(out_path))[0] == 0


def test_import_segment_without_output_prints_the_file(tmp_path):
    code, out, _ = cli("import-segment", str(write(tmp_path, "export.json", EXPORT)))
    assert code == 0 and json.loads(out)["subscriptions"][0]["name"] == "Contacts"


def test_import_segment_reports_what_it_cannot_carry_and_still_writes(tmp_path):
    export = {"subscriptions": [*EXPORT["data"]["subscriptions"],
                                {"id": "s2", "name": "Texts", "actionSlug": "sendSms", "enabled": True,
                                 "trigger": 'type = "track"', "settings": {}}]}
    out_path = tmp_path / "subscriptions.json"
    code, _, err = cli("import-segment", str(write(tmp_path, "export.json", export)), "-o", str(out_path))
    assert code == 1
    assert "not carried over: subscription 2 'Texts' (id s2): not imported: unknown actionSlug 'sendSms'" in err
    assert [s.name for s in load_subscriptions(out_path, environ={})] == ["Contacts"]


@pytest.mark.parametrize(("content", "needle"), [("{oops", "not valid JSON"), ('{"data": 3}', "expected")])
def test_import_segment_input_errors_are_usage_errors(tmp_path, content, needle):
    path = tmp_path / "export.json"
    path.write_text(content)
    code, _, err = cli("import-segment", str(path))
    assert code == 2 and needle in err


# --- the make targets -----------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_the_make_targets_run_the_cli(tmp_path):
    def make(*args):
        return subprocess.run(["make", "--no-print-directory", "-f", "mk/config.mk", f"PY={sys.executable}", *args],
                              cwd=ROOT, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})

    passed = make("check-config", "VARS=QUALTRICS_DIRECTORY_ID=POOL_1 QUALTRICS_MAILING_LIST_ID=CG_1")
    assert passed.returncode == 0 and "no problems" in passed.stdout
    failed = make("check-config")
    assert failed.returncode != 0 and "QUALTRICS_DIRECTORY_ID" in failed.stderr
    event = write(tmp_path, "identify.json", IDENTIFY)
    dry = make("preview", f"EVENT={event}", "VARS=QUALTRICS_DIRECTORY_ID=POOL_1", "JSON=1")
    assert dry.returncode == 0 and json.loads(dry.stdout)["events"]
    assert make("preview").returncode != 0
    out_path = tmp_path / "imported.json"
    imported = make("import-segment", f"FILE={write(tmp_path, 'export.json', EXPORT)}", f"OUT={out_path}")
    assert imported.returncode == 0 and out_path.exists()


# --- the one command line: segment-qualtrics <command> ----------------------------------------------

COMMANDS = ["check-config", "preview", "import-segment", "dlq", "smoke", "check-qualtrics"]
LOADED = ("import sys\nfrom segment_qualtrics.tools.cli import build_parser, main\ntry:\n    main({argv!r})\n"
          "except SystemExit as exit:\n    print('exit', exit.code)\n"
          "print(sorted({{m.split('.')[0] for m in sys.modules}} & {{'boto3', 'botocore', 'requests'}}))")


def loaded_by(*argv: str) -> list[str]:
    """The last line of running the CLI in a fresh interpreter: which of boto3, botocore, requests it imported."""
    done = subprocess.run([sys.executable, "-c", LOADED.format(argv=list(argv))], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", **VARS})
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout.strip().splitlines()


def test_help_lists_every_command_and_imports_no_aws_nor_http_library():
    lines = loaded_by("--help")
    assert lines[-2:] == ["exit 0", "[]"]
    listed = [line.split()[0] for line in lines if line.startswith("    ") and line.split()[0] in COMMANDS]
    assert listed[:len(COMMANDS)] == COMMANDS
    assert loaded_by("dlq", "--help")[-1] == "['boto3', 'botocore']"   # only the command that runs is imported


def test_check_config_runs_without_boto3_or_requests():
    lines = loaded_by("check-config")
    assert "no problems" in lines[0] and lines[-1] == "[]"


@pytest.mark.parametrize("command", [
    [str(Path(sys.executable).parent / "segment-qualtrics")],   # the console script pyproject.toml declares
    [sys.executable, "-m", "segment_qualtrics"],
])
def test_the_installed_command_and_python_m_are_the_same_cli(command, tmp_path):
    done = subprocess.run([*command, "check-config"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", **VARS})
    assert done.returncode == 0 and "4 subscription(s), 2 enabled, no problems" in done.stdout, done.stderr
    usage = subprocess.run([*command, "no-such-command"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "invalid choice: 'no-such-command'" in usage.stderr
    assert usage.stderr.startswith("usage: segment-qualtrics ")


def test_each_command_has_its_options_under_its_name():
    for argv, option in ((["dlq", "list", "--help"], "--older-than"), (["smoke", "--help"], "--event"),
                         (["check-qualtrics", "--help"], "--secret-arn"), (["preview", "--help"], "--datacenter"),
                         (["import-segment", "--help"], "--output")):
        out = io.StringIO()
        with pytest.raises(SystemExit) as stopped, contextlib.redirect_stdout(out):
            main(argv)
        assert stopped.value.code == 0 and option in out.getvalue(), argv


def test_backfill_is_a_command_of_the_one_cli(tmp_path):
    events = tmp_path / "events.ndjson"
    events.write_text(json.dumps({"type": "identify", "messageId": "m1", "userId": "u1",
                                  "traits": {"email": "a@example.com"}}) + "\nnot json\n")
    code, out, _ = cli("backfill", str(events), "--dry-run", "--json", "--no-progress",
                       "--contacts-mailing-list", "CG_X", "--checkpoint", str(tmp_path / "ckpt"),
                       "--rejects", str(tmp_path / "rejects"), environ=VARS)
    summary = json.loads(out)
    assert code == 0 and summary["dryRun"] is True and summary["lines"] == 2 and summary["rejects"] == 1
    assert summary["matched"] == {"Create or update contact": 1} and summary["contactsLoaded"] == 1
    with pytest.raises(SystemExit):
        cli("backfill")   # the input file is required
