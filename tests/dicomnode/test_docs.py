"""The README's Orthanc example is the one the PACS tests run."""

from __future__ import annotations

import re

from nodekit import REPO, ROUTING_LUA


def test_the_readme_routing_rule_is_the_one_the_tests_give_orthanc():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    [lua] = re.findall(r"```lua\n(.*?)```", readme, re.S)
    assert lua == ROUTING_LUA
    assert '"DicomModalities": { "boneage": [ "BONEAGE", ' in readme  # the modality the rule names
