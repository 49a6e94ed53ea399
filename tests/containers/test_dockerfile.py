"""The Dockerfile, read without building it: stages, user, lock file, what it copies and
whether each command it (or docker-compose.yml) runs resolves to something in the repo."""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import shlex

import pytest

from tests.containers.support import DOCKERIGNORE, ROOT, dockerfile, exec_form, services

TARGETS = ("app", "locust")


def _ignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    return any(
        fnmatch.fnmatch(prefix, pattern.removeprefix("**/"))
        or fnmatch.fnmatch(prefix.rsplit("/", 1)[-1], pattern.removeprefix("**/"))
        if pattern.startswith("**/")
        else fnmatch.fnmatch(prefix, pattern)
        for pattern in patterns
        for prefix in prefixes
    )


def test_multi_stage_with_the_app_as_default_target() -> None:
    parsed = dockerfile()
    names = [stage.name for stage in parsed.stages]
    assert len(names) >= 3
    assert names[-1] == "app", "the last stage is what `docker build .` gives"
    assert set(TARGETS) <= set(names)
    for service in services().values():
        if "build" in service:
            assert service["build"]["target"] in names


@pytest.mark.parametrize("target", TARGETS)
def test_targets_run_as_an_unprivileged_user(target: str) -> None:
    users = [user for stage in dockerfile().lineage(target) for user in stage.all("USER")]
    assert users, f"{target} runs as root"
    assert users[0].split(":")[0] not in {"root", "0"}


@pytest.mark.parametrize("target", TARGETS)
def test_targets_carry_no_build_tools(target: str) -> None:
    """Small: the runtime stages copy the virtualenv, not uv or the build's caches."""
    chain = dockerfile().lineage(target)
    assert all(stage.name not in {"build", "build-locust", "uv"} for stage in chain)
    runs = " ".join(run for stage in chain for run in stage.all("RUN"))
    assert "uv " not in runs
    assert "pip install" not in runs
    assert "apt-get" not in runs


def test_dependencies_come_from_the_lock_file() -> None:
    parsed = dockerfile()
    build = parsed.stage("build")
    assert any("uv.lock" in copy.split() for copy in build.all("COPY"))
    sync = " ".join(build.all("RUN"))
    assert "uv sync --frozen" in sync
    assert "--no-dev" in sync
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    pinned = re.search(r"^UV_VERSION := (\S+)$", makefile, re.M)
    assert pinned is not None
    assert parsed.args["UV_VERSION"] == pinned[1]
    app = parsed.stage("app")
    assert any(copy.startswith("--from=build ") for copy in app.all("COPY"))


def test_locust_is_installed_in_its_stage_at_a_pinned_version() -> None:
    stage = dockerfile().stage("build-locust")
    version = next(arg for arg in stage.all("ARG") if arg.startswith("LOCUST_VERSION="))
    assert re.fullmatch(r"LOCUST_VERSION=\d+\.\d+\.\d+", version)
    assert any('"locust==${LOCUST_VERSION}"' in run for run in stage.all("RUN"))
    locust = dockerfile().stage("locust")
    assert any(copy.startswith("--from=build-locust ") for copy in locust.all("COPY"))


def test_everything_copied_exists_and_is_in_the_build_context() -> None:
    copied = 0
    for stage in dockerfile().stages:
        for args in stage.all("COPY"):
            words = [word for word in shlex.split(args) if not word.startswith("--")]
            if args.startswith("--from="):
                continue
            for source in words[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert not _ignored(source), f"COPY {source}: excluded by .dockerignore"
                copied += 1
    assert copied >= 8
    for local in (".venv", "var", ".git", ".tools"):
        assert _ignored(local), f".dockerignore lets {local} into the build context"


def _module_of(command: list[str]) -> str | None:
    return command[command.index("-m") + 1] if command[:2] == ["python", "-m"] else None


def _runnable(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    if spec is None:
        return False
    if spec.submodule_search_locations is not None:
        return importlib.util.find_spec(f"{module}.__main__") is not None
    source = (ROOT / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8")
    return 'if __name__ == "__main__":' in source


@pytest.mark.parametrize("module", ["monolith", "services", "gateway", "launcher"])
def test_every_deployable_has_an_entry_point(module: str) -> None:
    assert _runnable(module)
    assert (ROOT / module / "__main__.py").is_file()


def test_image_and_compose_commands_resolve() -> None:
    commands = [exec_form(cmd) for stage in dockerfile().stages for cmd in stage.all("CMD")]
    commands += [service["command"] for service in services().values() if "command" in service]
    assert len(commands) > 20
    for command in commands:
        if command[0] == "locust":
            # The file comes with the load tests; its folder is in the image.
            assert command[1:3] == ["-f", "loadtests/locustfile.py"]
            assert (ROOT / "loadtests").is_dir()
            assert not _ignored("loadtests/locustfile.py")
            continue
        module = _module_of(command)
        assert module is not None, f"not a `python -m` command: {command}"
        assert _runnable(module), f"python -m {module}: no such entry point"
        # Every copied top-level package is there for the command's module.
        top = module.split(".")[0]
        assert any(
            top in shlex.split(copy) for stage in dockerfile().stages for copy in stage.all("COPY")
        ), f"{top} is not copied into the image"
    assert exec_form(dockerfile().stage("locust").all("CMD")[-1]) == [
        "locust",
        "-f",
        "loadtests/locustfile.py",
    ]
