"""The node's settings: one parser per setting, the command line beats the config file, which
beats the defaults, for every setting alike; bad values are one line naming where they came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from boneage.cli.main import build_parser
from boneage.dicomnode.settings import (
    COMMAND_LINE, CONFIG_FILE, DEFAULT, SETTINGS, Destination, NodeSettings, resolve_settings,
)
from boneage.errors import InputError

#: Two valid values of every setting, as a YAML file and a command line would give them.
FILE_VALUES = {"ae_title": "NODEFILE", "host": "0.0.0.0", "port": 104, "destination": "PACS@10.1.1.1:104",
               "allow": ["CR1", "DX2"], "spool": "/var/spool/boneage", "workers": 3, "threads": 2,
               "model": "/models/a.onnx", "force": True, "page_dpi": 90, "min_free_mb": 500,
               "timeout": 12, "retry_initial": 1, "retry_max": 60, "retry_hours": 24}
CLI_VALUES = {"ae_title": "NODECLI", "host": "127.0.0.2", "port": "11113", "destination": "ORTHANC@[::1]:4242",
              "allow": "MOD1,MOD2", "spool": "/srv/spool", "workers": "2", "threads": "1",
              "model": "/models/b.onnx", "force": False, "page_dpi": "60", "min_free_mb": "0",
              "timeout": "5", "retry_initial": "0.5", "retry_max": "30", "retry_hours": "1"}


def _yaml(path: Path, values: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(values))
    return path


def test_the_table_covers_every_setting_and_every_setting_is_an_option():
    names = [s.name for s in SETTINGS]
    assert set(names) == set(FILE_VALUES) == set(CLI_VALUES)
    assert set(names) | {"sources"} == {f for f in NodeSettings.__dataclass_fields__}
    help_text = build_parser("dicom-node")._subparsers._group_actions[0].choices["dicom-node"].format_help()
    for s in SETTINGS:
        assert s.option in help_text, s.option


@pytest.mark.parametrize("name", [s.name for s in SETTINGS])
def test_the_command_line_beats_the_file_for_every_setting(tmp_path, name):
    config = _yaml(tmp_path / "node.yaml", FILE_VALUES)
    from_file = resolve_settings(config)
    both = resolve_settings(config, {name: CLI_VALUES[name]})
    only_cli = resolve_settings(None, {name: CLI_VALUES[name]})
    assert getattr(both, name) == getattr(only_cli, name) != getattr(from_file, name)
    assert both.sources[name] == COMMAND_LINE and from_file.sources[name] == CONFIG_FILE
    assert resolve_settings(None).sources[name] == DEFAULT
    others = [s.name for s in SETTINGS if s.name != name]
    assert all(getattr(both, n) == getattr(from_file, n) for n in others)


def test_values_are_parsed_the_same_from_either_source(tmp_path):
    s = resolve_settings(_yaml(tmp_path / "n.yaml", FILE_VALUES))
    assert s.destination == Destination("PACS", "10.1.1.1", 104) and s.allow == ("CR1", "DX2")
    assert s.port == 104 and s.workers == 3 and s.force is True and s.spool == Path("/var/spool/boneage")
    c = resolve_settings(None, CLI_VALUES)
    assert c.destination == Destination("ORTHANC", "::1", 4242) and str(c.destination) == "ORTHANC@[::1]:4242"
    assert c.allow == ("MOD1", "MOD2") and c.port == 11113 and c.retry_initial == 0.5
    # A list in YAML and a comma-separated string mean the same allow-list.
    assert resolve_settings(_yaml(tmp_path / "m.yaml", {"allow": "MOD1, MOD2"})).allow == c.allow
    assert NodeSettings.from_dict(c.to_dict()) == c


def test_relative_paths_in_a_config_file_are_relative_to_the_file(tmp_path):
    (tmp_path / "etc").mkdir()
    config = _yaml(tmp_path / "etc" / "node.yaml", {"spool": "spool", "model": "m.onnx"})
    s = resolve_settings(config)
    assert s.spool == tmp_path / "etc" / "spool" and s.model == str(tmp_path / "etc" / "m.onnx")
    assert resolve_settings(config, {"spool": "here"}).spool == Path("here")  # the working directory's


@pytest.mark.parametrize("given, message", [
    ({"port": "70000"}, "--port: port must be 0-65535, got 70000"),
    ({"destination": "PACS:104"}, "--destination: destination must be AE@host:port"),
    ({"ae_title": "A-TITLE-LONGER-THAN-16"}, "--ae-title: AE title 'A-TITLE-LONGER-THAN-16' is longer than 16"),
    ({"allow": "GOOD,BAD\\AE"}, "--allow: AE title 'BAD\\\\AE' may hold printable ASCII characters only"),
    ({"workers": "0"}, "--workers: must be >= 1, got 0"),
    ({"retry_max": "-1"}, "--retry-max: must be a number of seconds >= 0.01, got '-1'"),
])
def test_bad_command_line_values_are_one_line_naming_the_option(given, message):
    with pytest.raises(InputError) as info:
        resolve_settings(None, given)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bad_config_files_are_one_line_naming_the_file_and_key(tmp_path):
    with pytest.raises(InputError, match=r"node\.yaml: port: expected a port number, got 'abc'"):
        resolve_settings(_yaml(tmp_path / "node.yaml", {"port": "abc"}))
    with pytest.raises(InputError, match=r"unknown setting 'ae-titel' \(did you mean 'ae_title'\?\)"):
        resolve_settings(_yaml(tmp_path / "node.yaml", {"ae-titel": "X"}))
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(InputError, match="must be a YAML mapping"):
        resolve_settings(tmp_path / "list.yaml")
    with pytest.raises(InputError, match="config file not found"):
        resolve_settings(tmp_path / "missing.yaml")


def test_running_needs_a_spool_and_a_destination_and_says_how_to_give_them():
    with pytest.raises(InputError, match=r"no spool given: pass --spool DIR or set 'spool:' in the config file"):
        resolve_settings(None).require("spool", "destination")
    with pytest.raises(InputError, match=r"no destination given: pass --destination AE@HOST:PORT"):
        resolve_settings(None, {"spool": "x"}).require("spool", "destination")


def test_cli_errors_are_one_line_without_a_traceback(cli, tmp_path):
    code, out, err = cli("dicom-node", "--port", "x", "--spool", tmp_path)
    assert code == 2 and out == "" and err == "boneage: error: --port: expected a port number, got 'x'\n"
    code, out, err = cli("dicom-node", "--spool", tmp_path)
    assert code == 2 and err.startswith("boneage: error: no destination given") and err.count("\n") == 1
