"""Limits on what a client may cost ddm before it has logged in, as pure bookkeeping (no I/O, no clock reads).

`PreauthGate` counts a worker's unauthenticated connections, in all and per source address; `ddm.frontend.connection` asks
it in `connection_made` and tells it when the connection authenticates or goes away. `LoginThrottle` remembers
failed logins per (user, source address) and answers how long the next 1045 is held back, like MySQL's
connection_control plugin: the first `threshold` failures are answered at once, each further one waits `step`
seconds more, up to `max_delay`; a success clears the count, and a count not added to for `forget_after` seconds
starts again from zero. Both tables are bounded (`max_entries`, oldest forgotten first) so that an attacker
cycling through user names or addresses cannot grow them without limit.
"""

from __future__ import annotations

from collections import OrderedDict

# MariaDB's text (Item_param::set_longdata, reported by the next COM_STMT_EXECUTE as ER_UNKNOWN_ERROR)
LONG_DATA_TOO_LONG = ("Parameter of prepared statement which is set through mysql_send_long_data() is longer than "
                      "'max_long_data_size' bytes")


class PreauthGate:
    """Unauthenticated connections of one worker, in all and per source address."""

    __slots__ = ("total", "by_address")

    def __init__(self) -> None:
        self.total = 0
        self.by_address: dict[str, int] = {}

    def admit(self, address: str, max_total: int, max_per_address: int) -> str | None:
        """Count a new connection from `address`; None if admitted, else why not (nothing is counted then).
        The limits are passed in so that a reloaded configuration applies to the next connection."""
        if self.total >= max_total:
            return f"{self.total} connections of this worker are not yet authenticated (max_unauthenticated)"
        n = self.by_address.get(address, 0)
        if n >= max_per_address:
            return f"{n} connections from {address} are not yet authenticated (max_unauthenticated_per_address)"
        self.by_address[address] = n + 1
        self.total += 1
        return None

    def release(self, address: str) -> None:
        """An admitted connection authenticated or closed."""
        n = self.by_address.get(address, 0)
        if n <= 1:
            self.by_address.pop(address, None)
        else:
            self.by_address[address] = n - 1
        if n:
            self.total -= 1


def add_long_data(stmt, payload: bytes, cap: int) -> bool:
    """Buffer one COM_STMT_SEND_LONG_DATA payload (0x18, statement id, parameter id, data) on `stmt` (a
    ddm.frontend.connection.ClientStatement), unless the statement's long data would then exceed `cap` bytes: then what it
    holds is dropped at once and `long_data_size` set to -1, for the next execute to fail with LONG_DATA_TOO_LONG
    (further chunks are dropped too). False when the chunk was not kept."""
    if stmt.long_data_size < 0:
        return False
    held = stmt.long_data_size if stmt.long_data else 0  # an execute or reset emptied the list
    size = held + len(payload) - 7
    if size > cap:
        stmt.long_data = []
        stmt.long_data_size = -1
        return False
    stmt.long_data.append(payload)
    stmt.long_data_size = size
    return True


class LoginThrottle:
    """Failed logins per (user, address) and the delay before the next failure is answered."""

    __slots__ = ("threshold", "step", "max_delay", "forget_after", "max_entries", "_failures")

    def __init__(self, threshold: int = 3, step: float = 1.0, max_delay: float = 10.0,
                 forget_after: float = 600.0, max_entries: int = 10000) -> None:
        self.threshold = threshold
        self.step = step
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_entries = max_entries
        self._failures: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()

    def failed(self, user: str, address: str, now: float) -> tuple[int, float]:
        """Record a failure at `now` (monotonic seconds): (consecutive failures, seconds to wait before answering)."""
        key = (user, address)
        count, last = self._failures.pop(key, (0, now))
        if now - last > self.forget_after:
            count = 0
        count += 1
        self._failures[key] = (count, now)
        while len(self._failures) > self.max_entries:
            self._failures.popitem(last=False)
        return count, self.delay(count)

    def configure(self, threshold: int, step: float, max_delay: float) -> None:
        """Apply settings (a reloaded configuration); the counts are kept."""
        self.threshold, self.step, self.max_delay = threshold, step, max_delay

    def delay(self, count: int) -> float:
        over = count - self.threshold
        if over <= 0 or self.step <= 0:
            return 0.0
        return min(self.max_delay, over * self.step)

    def succeeded(self, user: str, address: str) -> None:
        self._failures.pop((user, address), None)

    def __len__(self) -> int:
        return len(self._failures)
