"""How a start command runs (pure: no process is started here; tests/local/test_runner.py starts them)."""

from __future__ import annotations

import pytest

from rhone_local import processes


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("python3 app.py", ["python3", "app.py"]),
        ('gunicorn -w 2 "app:create()"', ["gunicorn", "-w", "2", "app:create()"]),
        ("python3 app.py > out.log 2>&1", ["/bin/sh", "-c", "exec python3 app.py > out.log 2>&1"]),
        ("FOO=1 BAR='a b' python3 $APP", ["/bin/sh", "-c", "FOO=1 BAR='a b' exec python3 $APP"]),
        ("cd sub && python3 app.py", ["/bin/sh", "-c", "cd sub && python3 app.py"]),
        ("python3 child.py & python3 app.py", ["/bin/sh", "-c", "python3 child.py & python3 app.py"]),
        ("exec python3 app.py", ["/bin/sh", "-c", "exec python3 app.py"]),
        ("python3 'unbalanced", ["/bin/sh", "-c", "python3 'unbalanced"]),
    ],
)
def test_start_commands_run_so_that_the_app_gets_the_signals(command: str, argv: list[str]) -> None:
    assert processes.start_argv(command) == argv
