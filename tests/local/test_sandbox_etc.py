"""The sandbox's /etc: a copy of the host's few files, kept in step, with the sandbox's own users."""

from __future__ import annotations

from pathlib import Path

from rhone_local.sandbox import GROUP, PASSWD, refresh_etc


def test_refresh_writes_the_sandbox_users_and_only_the_listed_host_files(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    refresh_etc(etc)
    assert (etc / "passwd").read_text() == PASSWD and (etc / "group").read_text() == GROUP
    assert "root:x:0:0" in PASSWD and ":1000:1000:app:/home/app:" in PASSWD
    names = {p.name for p in etc.iterdir()}
    assert not names & {"shadow", "gshadow", "sudoers", "ssh", "machine-id"}
    if Path("/etc/hosts").is_file():
        assert (etc / "hosts").read_bytes() == Path("/etc/hosts").read_bytes()


def test_refresh_repairs_what_changed_and_leaves_the_rest(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    refresh_etc(etc)
    (etc / "passwd").write_text("intruder:x:0:0::/:/bin/sh\n")
    before = {p.name: p.stat().st_ino for p in etc.iterdir() if p.is_file() and p.name != "passwd"}
    refresh_etc(etc)
    assert (etc / "passwd").read_text() == PASSWD
    after = {p.name: p.stat().st_ino for p in etc.iterdir() if p.is_file() and p.name != "passwd"}
    assert after == before  # unchanged files are not rewritten
    assert not [p for p in etc.iterdir() if p.name.endswith(".tmp")]
