"""Running a test's work on many threads at once."""

from __future__ import annotations

import threading
from collections.abc import Callable


def at_once(work: Callable[[int], object], n: int, timeout: float = 120) -> list[BaseException]:
    """``work(i)`` for ``i`` in ``range(n)``, each on its own thread, all started together;
    what they raised. Fails the test if any is still running after ``timeout`` seconds."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), f"still running after {timeout} s"
    return errors
