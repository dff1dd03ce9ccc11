"""Manifests of the project: which directory, which filters — one answer for `artifact manifest` and `deploy`."""

from __future__ import annotations

import os
import stat
import sys

# `typing` is for the type checker only: this module is on the start-up path of the commands answered without the
# command tree, where importing it costs ~2 ms (rhone_cli/plain_invocation.py). A warm `artifact manifest` of a project
# without rhone.toml needs neither `pathlib` nor `rhone_cli.errors` (with `re` and `enum`, more CPU time than its
# walk): paths are strings on that path, and both are imported where they are needed.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from rhone_cli.environment import Environment
    from rhone_cli.output import Output


def project_manifest(workdir: Path | str, *, prebuilt: bool, use_cache: bool = True, out: Output | None = None) -> Any:
    """The manifest `rhone deploy` would upload from `workdir`: the project directory, or with `prebuilt` its
    build.output, filtered by the built-in ignores, .rhoneignore and build.include/exclude.

    With `out`, files that are this very command's stdout or stderr (`rhone deploy > result.json 2>> ci.log` run in
    the project) are left out with a warning: they are written while the command runs, so their content at hashing
    time is never the content at upload time, and they are output, not source."""
    from rhone_cli.artifacts.manifest import Manifest, build_manifest

    root, include, exclude = manifest_root(workdir, prebuilt=prebuilt)
    # Found before the walk, which then notes whether it hashed them: the count of files hashed stays true.
    outputs = redirected_outputs(out.env, os.path.realpath(root)) if out is not None else {}
    manifest = build_manifest(root, include=include, exclude=exclude, use_cache=use_cache, watch=frozenset(outputs))
    listed = [path for path in outputs if any(entry["path"] == path for entry in manifest.files)]
    if not listed:
        return manifest
    for path in listed:
        stream = outputs[path]
        out.warn(
            f"leaving {path} out of the manifest: it is this command's {stream}, redirected into the project "
            "(add it to .rhoneignore to say so)"
        )
    kept = [entry for entry in manifest.files if entry["path"] not in outputs]
    hashed = manifest.hashed_count - len(manifest.hashed_watched.intersection(listed))
    return Manifest(root=manifest.root, files=kept, hashed_count=hashed)


def redirected_outputs(env: Environment, root: str) -> dict[str, str]:
    """{root-relative POSIX path: "stdout" | "stderr"} for this process's output streams that are regular files
    under `root` (a real path)."""
    found: dict[str, str] = {}
    below = root if root.endswith(os.sep) else root + os.sep
    for name, stream in (("stdout", env.stdout), ("stderr", env.stderr)):
        path = _file_behind(stream)
        if path is not None and path.startswith(below):
            found.setdefault(path[len(below) :].replace(os.sep, "/"), name)
    return found


def _file_behind(stream: Any) -> str | None:
    """The real path of the regular file a stream writes to, when the platform can tell (Linux, macOS)."""
    try:
        fd = stream.fileno()
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        if sys.platform == "darwin":
            import fcntl

            return os.path.realpath(fcntl.fcntl(fd, fcntl.F_GETPATH, b"\0" * 1024).rstrip(b"\0").decode())
        return os.path.realpath(os.readlink(f"/proc/self/fd/{fd}"))
    except (AttributeError, OSError, ValueError):  # not a real file (a test's StringIO), or no way to tell
        return None


def explain_path(workdir: Path, path: str, *, prebuilt: bool) -> dict[str, Any]:
    """Why `path` is in or out of the manifest `rhone deploy` would upload from `workdir`."""
    from pathlib import Path

    from rhone_cli.artifacts.manifest import explain
    from rhone_cli.errors import ExitCode, RhoneError

    root, include, exclude = manifest_root(workdir, prebuilt=prebuilt)
    candidate = Path(path)
    if candidate.is_absolute() or (workdir / candidate).exists():
        # A path as the user sees it (absolute, or relative to where they stand): made relative to the root.
        absolute = (candidate if candidate.is_absolute() else workdir / candidate).absolute()
        try:
            path = absolute.relative_to(root.absolute()).as_posix()
        except ValueError:
            raise RhoneError(f"{path} is not inside {root}", code="invalid_path", exit_code=ExitCode.USAGE) from None
    return {"root": str(root), **explain(root, path, include=include, exclude=exclude)}


def manifest_root(workdir: Path | str, *, prebuilt: bool) -> tuple[Path | str, list[str], list[str]]:
    """(manifest root, build.include, build.exclude): the project directory, or build.output with --prebuilt;
    `workdir` itself (a str when given one) where there is no rhone.toml."""
    path = nearest_project_file(workdir)
    if path is None:
        if prebuilt:
            from rhone_cli.errors import ExitCode, RhoneError

            raise RhoneError(
                f"--prebuilt needs rhone.toml (its build.output), and there is none in {workdir} or above",
                code="config_not_found",
                exit_code=ExitCode.USAGE,
                hint="run `rhone init`, or use -C DIR to point at the project",
            )
        return workdir, ["**"], []
    from rhone_cli.errors import ExitCode, RhoneError

    build = _build_section(workdir, path)
    base = path.parent
    if not prebuilt:
        return base, build["include"], build["exclude"]
    output = base / build["output"]
    if not output.is_dir():
        raise RhoneError(
            f"build output {output} does not exist (build.output = {build['output']!r} in {path})",
            code="build_output_missing",
            exit_code=ExitCode.USAGE,
            hint="run the build first (build.command), or fix build.output in rhone.toml",
        )
    real_base, real_output = base.resolve(), output.resolve()
    if real_output != real_base and real_base not in real_output.parents:
        raise RhoneError(
            f"build output {output} resolves outside the project directory (to {real_output})",
            code="unsafe_path",
            exit_code=ExitCode.USAGE,
        )
    return output, build["include"], build["exclude"]


def _build_section(workdir: Path | str, path: Path) -> dict[str, Any]:
    """rhone.toml's [build] with its defaults filled in. A file the pydantic-free rules accept is read as it is (a warm
    manifest takes less time than importing pydantic); any other is loaded by the models, which say what is wrong."""
    from rhone_cli.config.rules import BUILD_DEFAULTS, read_plainly_valid

    data = read_plainly_valid(path)
    if data is not None:
        return {**BUILD_DEFAULTS, **data.get("build", {})}
    from pathlib import Path

    from rhone_cli.config import project

    return project.load(Path(workdir), path).build.model_dump()


def nearest_project_file(workdir: Path | str) -> Path | None:
    """The nearest rhone.toml at or above `workdir`: `config.project.find`, without importing the rhone.toml models
    (pydantic costs more start-up time than a warm manifest of thousands of files), nor `pathlib` until one is found,
    which a tree without rhone.toml never needs."""
    directory = os.path.realpath(workdir)  # what Path.resolve() does
    while True:
        candidate = os.path.join(directory, "rhone.toml")
        if os.path.isfile(candidate):
            from pathlib import Path

            return Path(candidate)
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def show_manifest(out: Output, workdir: Path | str, *, prebuilt: bool, use_cache: bool) -> None:
    """`rhone artifact manifest`: the manifest's digest and counts (the whole document with --json)."""
    from rhone_cli.output import human_size

    result = project_manifest(workdir, prebuilt=prebuilt, use_cache=use_cache, out=out)
    if result.cache_warning:
        out.info(f"note: {result.cache_warning}")
    if out.env.options.json and out.compact_json:
        out.encoded_json_document(_compact_manifest_document(result))
        return
    # The document (every file's entry) is made only for --json: the digest and the counts need none of it.
    document = None
    if out.env.options.json:
        document = {
            "digest": result.digest,
            "root": result.root,
            "file_count": result.file_count,
            "total_size": result.total_size,
            "hashed": result.hashed_count,
            "manifest": result.document,
        }

    def human(out: Output) -> None:
        out.fields(
            {
                "digest": result.digest,
                "root": result.root,
                "files": result.file_count,
                "size": f"{result.total_size} bytes ({human_size(result.total_size)})",
                "hashed": f"{result.hashed_count} ({result.file_count - result.hashed_count} from the stat cache)",
            }
        )

    out.result(document, human)


def _compact_manifest_document(result: Any) -> list[bytes]:
    """The --json document of `show_manifest` as `Output.json_document` encodes it when piped (compact, ASCII, the
    keys in this order), in pieces: the file list is `Manifest.files_json`, made without a dict per file."""
    from rhone_cli.artifacts.manifest import MANIFEST_VERSION, json_string

    head = (
        f'{{"digest":{json_string(result.digest)},"root":{json_string(str(result.root))},'
        f'"file_count":{result.file_count},"total_size":{result.total_size},"hashed":{result.hashed_count},'
        f'"manifest":{{"version":{MANIFEST_VERSION},"files":'
    )
    return [head.encode(), result.files_json(), b"}}\n"]
