"""The Lock contract: named locks with a ttl, held by one handle (token) at a time.

The fixture ``lock_broker`` yields a fresh, namespaced broker that claims
``SupportsLocks``; ``broker.lock(name)`` makes a new handle with its own token.
Timing uses real, short durations with generous bounds.
"""

from __future__ import annotations

import threading
import time
from typing import Any


class TestLockContract:
    def test_acquire_and_release(self, lock_broker: Any) -> None:
        """A free lock is acquired, reported locked, then released and free again."""
        lock = lock_broker.lock("l")

        acquired = lock.acquire(timeout=1.0)
        held = lock.is_locked()
        released = lock.release()

        assert acquired is True
        assert held is True
        assert released is True
        assert lock.is_locked() is False

    def test_a_ttl_that_is_not_a_positive_number_is_refused(
        self, lock_broker: Any
    ) -> None:
        """ttl 0, negative or NaN would lapse as taken: a ValueError, lock free."""
        lock = lock_broker.lock("l")
        refused = 0
        for bad in (0, -1.0, float("nan")):
            try:
                lock.acquire(timeout=0.1, ttl=bad)
            except ValueError:
                refused += 1
        lock.acquire(timeout=1.0, ttl=30)
        try:
            lock.set_ttl(0)
        except ValueError:
            refused += 1
        ttl = lock.get_ttl()
        lock.release()

        assert refused == 4
        assert ttl is not None
        assert 20 < ttl <= 30

    def test_lock_keeps_its_name(self, lock_broker: Any) -> None:
        """A handle reports the name it was made with."""
        lock = lock_broker.lock("named")

        assert lock.name == "named"

    def test_release_of_unheld_lock_returns_false(self, lock_broker: Any) -> None:
        """Releasing a lock nobody holds returns False."""
        lock = lock_broker.lock("l")

        assert lock.release() is False

    def test_second_handle_cannot_acquire_while_held(self, lock_broker: Any) -> None:
        """Another handle's acquire gives up with False after about its timeout."""
        holder = lock_broker.lock("l")
        other = lock_broker.lock("l")
        holder.acquire(timeout=1.0)
        started = time.monotonic()

        acquired = other.acquire(timeout=0.3, check_interval=0.02)
        elapsed = time.monotonic() - started

        assert acquired is False
        assert 0.24 <= elapsed < 5.0
        assert other.is_locked() is True

    def test_non_holder_cannot_release(self, lock_broker: Any) -> None:
        """Another handle's release returns False and leaves the lock held."""
        holder = lock_broker.lock("l")
        other = lock_broker.lock("l")
        holder.acquire(timeout=1.0)

        released = other.release()

        assert released is False
        assert holder.is_locked() is True
        assert holder.release() is True

    def test_locks_with_different_names_are_independent(self, lock_broker: Any) -> None:
        """Holding one name does not block another name."""
        first = lock_broker.lock("one")
        second = lock_broker.lock("two")
        first.acquire(timeout=1.0)

        acquired = second.acquire(timeout=0)

        assert acquired is True

    def test_release_lets_a_waiter_in(self, lock_broker: Any) -> None:
        """A handle waiting on a held lock takes it soon after the holder releases."""
        holder = lock_broker.lock("l")
        waiter = lock_broker.lock("l")
        holder.acquire(timeout=1.0)
        releaser = threading.Timer(0.2, holder.release)
        releaser.start()

        acquired = waiter.acquire(timeout=10.0, check_interval=0.02)
        releaser.join()

        assert acquired is True

    def test_mutual_exclusion_across_threads(self, lock_broker: Any) -> None:
        """Threads incrementing a shared counter under the lock lose no update."""
        counter = [0]
        errors: list[BaseException] = []

        def work() -> None:
            lock = lock_broker.lock("counter")
            try:
                for _ in range(25):
                    assert lock.acquire(timeout=20.0, check_interval=0.002)
                    value = counter[0]
                    time.sleep(0.001)  # widen the race window for a broken lock
                    counter[0] = value + 1
                    assert lock.release()
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

        assert errors == []
        assert counter[0] == 100

    def test_ttl_expiry_lets_another_acquire(self, lock_broker: Any) -> None:
        """A lapsed lock is free for another handle; the old one cannot release it."""
        first = lock_broker.lock("l")
        second = lock_broker.lock("l")
        first.acquire(timeout=1.0, ttl=0.3)
        blocked = second.acquire(timeout=0)
        time.sleep(0.6)

        acquired = second.acquire(timeout=0)

        assert blocked is False
        assert acquired is True
        assert first.release() is False
        assert second.is_locked() is True

    def test_get_ttl_reports_remaining_time(self, lock_broker: Any) -> None:
        """get_ttl is the time left on a held lock, None without ttl or when free."""
        timed = lock_broker.lock("timed")
        forever = lock_broker.lock("forever")
        timed.acquire(timeout=1.0, ttl=10.0)
        forever.acquire(timeout=1.0, ttl=None)

        remaining = timed.get_ttl()

        assert remaining is not None
        assert 5.0 < remaining <= 10.0
        assert forever.get_ttl() is None
        assert lock_broker.lock("free").get_ttl() is None

    def test_holder_can_set_ttl(self, lock_broker: Any) -> None:
        """set_ttl by the holder returns True and moves the lapse time."""
        lock = lock_broker.lock("l")
        lock.acquire(timeout=1.0, ttl=0.3)

        changed = lock.set_ttl(30.0)
        time.sleep(0.6)

        assert changed is True
        assert lock.is_locked() is True
        remaining = lock.get_ttl()
        assert remaining is not None
        assert 10.0 < remaining <= 30.0

    def test_non_holder_cannot_set_ttl(self, lock_broker: Any) -> None:
        """set_ttl by another handle returns False and leaves the ttl unchanged."""
        holder = lock_broker.lock("l")
        other = lock_broker.lock("l")
        holder.acquire(timeout=1.0, ttl=10.0)

        changed = other.set_ttl(1000.0)

        assert changed is False
        remaining = holder.get_ttl()
        assert remaining is not None
        assert remaining <= 10.0

    def test_is_locked_is_seen_by_every_handle(self, lock_broker: Any) -> None:
        """is_locked reports the lock's state to handles that do not hold it."""
        holder = lock_broker.lock("l")
        observer = lock_broker.lock("l")

        before = observer.is_locked()
        holder.acquire(timeout=1.0)
        during = observer.is_locked()
        holder.release()

        assert before is False
        assert during is True
        assert observer.is_locked() is False
