"""`halctl version` / `--version`: versions and where the collection and example inventory were found."""

from __future__ import annotations

import json
from pathlib import Path

from halswarm.cli.main import run
from halswarm.ops import install

ROOT = Path(__file__).resolve().parents[3]


def test_version_in_a_checkout_names_the_checkouts_collection(capsys, monkeypatch):
    monkeypatch.delenv("HALCTL_COLLECTIONS_PATH", raising=False)
    assert run(["version", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["collection"] == "0.1.0" and found["package"] == "0.1.0"
    assert found["collection_path"] == str(ROOT / "collections/ansible_collections/halswarm/ops")
    assert found["example_inventory"] == str(ROOT / "inventory.example")
    assert run(["--version"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("halctl 0.1.0\n") and "ansible-core 2.19." in text and "halswarm.ops 0.1.0 (" in text
    assert run(["version", "--example-inventory"]) == 0
    assert capsys.readouterr().out.strip() == str(ROOT / "inventory.example")


def test_collections_path_override_comes_first(tmp_path, capsys, monkeypatch):
    coll = tmp_path / "ansible_collections" / "halswarm" / "ops"
    coll.mkdir(parents=True)
    (coll / "MANIFEST.json").write_text(json.dumps({"collection_info": {"version": "9.8.7"}}))
    monkeypatch.setenv("HALCTL_COLLECTIONS_PATH", str(tmp_path))
    assert run(["version", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["collection"] == "9.8.7" and found["collection_path"] == str(coll)


def test_collection_version_sources(tmp_path):
    (tmp_path / "galaxy.yml").write_text("---\nnamespace: halswarm\nversion: '1.2.3'\n")
    assert install.collection_version(tmp_path) == "1.2.3"
    (tmp_path / "MANIFEST.json").write_text("{not json")
    assert install.collection_version(tmp_path) is None
    assert install.find_collection([str(tmp_path / "nowhere")]) is None
