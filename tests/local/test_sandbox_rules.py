"""The pure parts of sealed builds: the sandbox's argv, which links an artifact may hold, and what a setting may be."""

from __future__ import annotations

from pathlib import Path

import pytest

from rhone_local.artifacts import link_problem, materialize, record_tree
from rhone_local.blobs import BlobStore
from rhone_local.domain import settings
from rhone_local.domain.errors import DomainError
from rhone_local.domain.manifest import digest_of
from rhone_local.pipeline import build_key
from rhone_local.sandbox import APP_ROOT, CACHE_ROOT, HOME, SYSTEM_PATH, Bind, Sandbox, base_environment, detect

SEALED = Sandbox("bubblewrap", "/usr/bin/bwrap", system=("--ro-bind", "/usr", "/usr"), disable_userns=True)


def test_a_sealed_argv_exposes_the_tree_at_app_and_nothing_of_the_host_but_what_it_names(tmp_path: Path) -> None:
    argv = SEALED.argv("make", root=tmp_path / "build", binds=[Bind(tmp_path / "cache", CACHE_ROOT, True)], build=True)
    assert argv[0] == "/usr/bin/bwrap"
    for flag in ("--unshare-user", "--unshare-pid", "--new-session", "--die-with-parent", "--disable-userns"):
        assert flag in argv
    assert argv[argv.index("--uid") + 1] != "0"
    pairs = list(zip(argv, argv[1:], argv[2:], strict=False))
    assert ("--bind", str(tmp_path / "build"), APP_ROOT) in pairs
    assert ("--bind", str(tmp_path / "cache"), CACHE_ROOT) in pairs
    assert ("--tmpfs", "/tmp", "--tmpfs") in pairs and ("--dir", HOME, "--bind") in pairs
    host_paths = [a for a in argv[: argv.index("--")] if a.startswith("/")]
    assert set(host_paths) == {"/usr/bin/bwrap", "/", "/usr", "/tmp", "/home", "/proc", "/dev", str(tmp_path / "build"),
                               str(tmp_path / "cache"), APP_ROOT, CACHE_ROOT, HOME}  # fmt: skip
    assert argv[-1] == "make"  # the command is an argument of the reaping shell, never spliced into a script


def test_operator_paths_are_mounted_after_the_private_tmp_that_would_hide_them(tmp_path: Path) -> None:
    sandbox = Sandbox("bubblewrap", "bwrap", extra_ro=("/tmp/toolchains/go",))
    argv = sandbox.argv("go build", root=tmp_path)
    assert argv.index("/tmp/toolchains/go") > argv.index("--tmpfs")
    assert argv[argv.index("/tmp/toolchains/go") - 1] == "--ro-bind"


def test_an_allocation_does_not_die_with_its_caller_and_reports_its_pid_1(tmp_path: Path) -> None:
    """Allocations outlive a crash of Rhone Local (it adopts them), so only builds get --die-with-parent."""
    argv = SEALED.argv("python3 app.py", root=tmp_path, info_fd=7)
    assert "--die-with-parent" not in argv
    assert argv[argv.index("--info-fd") + 1] == "7"


def test_environment_values_never_reach_the_argv(tmp_path: Path) -> None:
    environment = base_environment(SEALED, tmp_path, home=tmp_path / "home", cache=tmp_path / "cache")
    argv = SEALED.argv("true", root=tmp_path)
    assert "--setenv" not in argv and "SECRET" not in " ".join(argv)
    assert environment["PATH"] == SYSTEM_PATH and environment["HOME"] == HOME
    assert environment["XDG_CACHE_HOME"] == CACHE_ROOT and environment["PIP_CACHE_DIR"].startswith(CACHE_ROOT)
    assert {"npm_config_cache", "GOCACHE", "GOMODCACHE", "GOPATH"} <= environment.keys()


def test_unsealed_runs_a_plain_shell_with_host_paths(tmp_path: Path) -> None:
    none = Sandbox("none", reason="turned off")
    assert none.argv("make", root=tmp_path, build=True) == ["/bin/sh", "-c", "make"]
    environment = base_environment(none, tmp_path, home=tmp_path / "home", cache=tmp_path / "cache")
    assert environment["HOME"] == str(tmp_path / "home") and environment["XDG_CACHE_HOME"] == str(tmp_path / "cache")
    assert "XDG_CACHE_HOME" not in base_environment(none, tmp_path, home=tmp_path / "home")  # apps get no cache


def test_detect_refuses_unknown_modes_and_missing_read_only_paths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown sandbox mode"):
        detect("docker", state_dir=tmp_path)
    with pytest.raises(ValueError, match="no such file"):
        detect("none", state_dir=tmp_path, extra_ro=[str(tmp_path / "missing")])
    assert detect("none", state_dir=tmp_path).mode == "none"


@pytest.mark.parametrize(
    ("path", "target", "allowed"),
    [
        (".venv/bin/python", "/usr/bin/python3", True),
        (".venv/bin/python3", "python", True),
        (".venv/lib64", "lib", True),
        ("node_modules/.bin/x", "../pkg/bin/x.js", True),
        ("a", "/usr", True),
        ("a", "/usr/../etc/shadow", False),
        (".venv/bin/python", "/root/.pyenv/versions/3.11.7/bin/python3", False),
        ("a", "/app/x", False),
        ("a/b", "../../escape", False),
        ("a", "..", False),
        ("a", "", False),
        ("a", "/etc/ssl/certs", False),
    ],
)
def test_which_links_an_artifact_may_hold(path: str, target: str, allowed: bool) -> None:
    assert (link_problem(path, target) is None) is allowed


def test_a_recorded_tree_keeps_links_as_links_and_materializes_them(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    built = tmp_path / "built"
    (built / ".venv" / "lib" / "site").mkdir(parents=True)
    (built / ".venv" / "lib" / "site" / "mod.py").write_text("x = 1\n")
    (built / ".venv" / "bin").mkdir()
    (built / ".venv" / "bin" / "python").symlink_to("/usr/bin/python3")
    (built / ".venv" / "lib64").symlink_to("lib")
    document = record_tree(blobs, built)
    assert document["links"] == [
        {"path": ".venv/bin/python", "target": "/usr/bin/python3"},
        {"path": ".venv/lib64", "target": "lib"},
    ]
    assert [f["path"] for f in document["files"]] == [".venv/lib/site/mod.py"]  # lib64 is not walked twice
    out = tmp_path / "out"
    materialize(blobs, document, out)
    assert (out / ".venv" / "bin" / "python").readlink() == Path("/usr/bin/python3")
    assert (out / ".venv" / "lib64" / "site" / "mod.py").read_text() == "x = 1\n"
    # The digest covers the links: another target is another artifact.
    (built / ".venv" / "bin" / "python").unlink()
    (built / ".venv" / "bin" / "python").symlink_to("/usr/bin/python3.11")
    assert digest_of(record_tree(blobs, built)) != digest_of(document)


def test_a_link_out_of_the_tree_is_refused_with_a_hint(tmp_path: Path) -> None:
    built = tmp_path / "built"
    (built / ".venv" / "bin").mkdir(parents=True)
    (built / ".venv" / "bin" / "python").symlink_to("/root/.pyenv/versions/3.11.7/bin/python3")
    with pytest.raises(DomainError) as info:
        record_tree(BlobStore(tmp_path / "blobs"), built)
    assert info.value.code == "unsafe_path"
    assert "'.venv/bin/python' links outside the output directory" in info.value.message
    assert "python3 -m venv .venv" in info.value.message  # the hint


def test_a_tree_without_links_keeps_its_digest_shape(tmp_path: Path) -> None:
    built = tmp_path / "built"
    built.mkdir()
    (built / "a").write_text("a")
    assert set(record_tree(BlobStore(tmp_path / "blobs"), built)) == {"version", "files"}


def test_materialize_refuses_a_link_document_that_escapes(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    for bad in ({"path": "x", "target": "/etc/passwd"}, {"path": "a/x", "target": "../../up"}):
        with pytest.raises(DomainError) as info:
            materialize(blobs, {"version": 1, "files": [], "links": [bad]}, tmp_path / "out")
        assert info.value.code == "invalid_manifest"
        assert not (tmp_path / "out" / bad["path"]).is_symlink()


def test_the_build_key_covers_what_decides_a_build_besides_its_source() -> None:
    config = {"build": {"command": "make", "output": "dist", "include": ["**"], "exclude": [], "timeout": 60}}
    same = {"build": {**config["build"], "timeout": 600}, "process": {"start": "other"}}
    assert build_key(config, "bubblewrap") == build_key(same, "bubblewrap")
    for change in ({"command": "make all"}, {"output": "."}, {"include": ["src/**"]}, {"exclude": ["x"]}):
        assert build_key({"build": {**config["build"], **change}}, "bubblewrap") != build_key(config, "bubblewrap")
    assert build_key(config, "none") != build_key(config, "bubblewrap")


@pytest.mark.parametrize("name", ["1A", "A-B", "", "PORT", "PATH", "HOME", "RHONE_X", "rhone_x", "required", "A" * 129])
def test_setting_names_the_platform_refuses(name: str) -> None:
    assert settings.name_problem(name) is not None


def test_settings_limits_refuse_the_whole_change() -> None:
    with pytest.raises(DomainError) as many:
        settings.check_change({}, {f"K{i}": "v" for i in range(10_000)}, [])
    assert (many.value.status, many.value.code) == (409, "settings_limit")
    with pytest.raises(DomainError) as big:
        settings.check_change({}, {"A": "x" * (4 * 1024 * 1024)}, [])
    assert (big.value.status, big.value.code) == (422, "invalid_setting")
    with pytest.raises(DomainError) as both:
        settings.check_change({"A": "1"}, {"A": "2"}, ["A"])
    assert both.value.code == "settings_contradict"
    assert settings.check_change({"A": "1", "B": "2"}, {"C": "x=y"}, ["A"]) == {"B": "2", "C": "x=y"}


def test_required_settings_are_met_by_the_environment_or_rhone_toml_defaults() -> None:
    config = {"env": {"required": ["SECRET_KEY", "MODE"], "MODE": "prod"}}
    assert settings.unmet(config, []) == ["SECRET_KEY"]
    assert settings.unmet(config, ["SECRET_KEY"]) == []
    assert settings.defaults_of(config) == {"MODE": "prod"}
