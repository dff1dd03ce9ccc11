"""An interruption (Ctrl-C, SIGTERM) is never lost: when Python runs rhone's signal handler inside a finalizer, the
exception it raises is dropped ("Exception ignored in ..."), and the main thread went back to a request it was blocked
in until that request timed out (a 1-in-30 hang of `rhone whoami` after Ctrl-C). The signal is delivered again."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import SIGNALLED_CHILD

SCRIPT = textwrap.dedent(
    """\
    import os, signal, time
    from rhone_cli.errors import Interrupted
    from rhone_cli.main import _interrupts_raise

    class Finalizer:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # the signal arrives while a finalizer runs...
            for _ in range(10_000):  # ...and its handler runs here, where an exception is dropped
                pass

    try:
        with _interrupts_raise():
            Finalizer()
            time.sleep(20)  # blocked, as in a request: only a signal delivered again ends this early
        print("not interrupted")
    except Interrupted as interrupted:
        print("interrupted", interrupted.signum)
    """
)


def test_an_interruption_dropped_by_a_finalizer_is_delivered_again() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, **SIGNALLED_CHILD
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "interrupted 2\n", (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "Interrupted" not in done.stderr
