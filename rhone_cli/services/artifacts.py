"""Manifests of the project: which directory, which filters — one answer for `artifact manifest` and `deploy`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rhone_cli.errors import ExitCode, RhoneError


def project_manifest(workdir: Path, *, prebuilt: bool, use_cache: bool = True) -> Any:
    """The manifest `rhone deploy` would upload from `workdir`: the project directory, or with `prebuilt` its
    build.output, filtered by the built-in ignores, .rhoneignore and build.include/exclude."""
    from rhone_cli.artifacts.manifest import build_manifest

    root, include, exclude = manifest_root(workdir, prebuilt=prebuilt)
    return build_manifest(root, include=include, exclude=exclude, use_cache=use_cache)


def explain_path(workdir: Path, path: str, *, prebuilt: bool) -> dict[str, Any]:
    """Why `path` is in or out of the manifest `rhone deploy` would upload from `workdir`."""
    from rhone_cli.artifacts.manifest import explain

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


def manifest_root(workdir: Path, *, prebuilt: bool) -> tuple[Path, list[str], list[str]]:
    """(manifest root, build.include, build.exclude): the project directory, or build.output with --prebuilt."""
    from rhone_cli.config import project

    path = project.find(workdir)
    if path is None:
        if prebuilt:
            raise RhoneError(
                f"--prebuilt needs rhone.toml (its build.output), and there is none in {workdir} or above",
                code="config_not_found",
                exit_code=ExitCode.USAGE,
                hint="run `rhone init`, or use -C DIR to point at the project",
            )
        return workdir, ["**"], []
    config = project.load(workdir, path)
    base = path.parent
    if not prebuilt:
        return base, config.build.include, config.build.exclude
    output = base / config.build.output
    if not output.is_dir():
        raise RhoneError(
            f"build output {output} does not exist (build.output = {config.build.output!r} in {path})",
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
    return output, config.build.include, config.build.exclude
