"""One exponential backoff, for everything that waits before trying again.

Worker retries (renders and uploads), webhook deliveries and the SeaweedFS supervisor's
restarts all wait ``first``, then twice that per further attempt, never more than ``cap``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    first: float  # seconds before the second attempt
    cap: float  # the longest pause
    factor: float = 2.0

    def delay(self, attempt: int) -> float:
        """The pause after failed attempt number ``attempt`` (1 for the first failure)."""
        return min(self.cap, self.first * self.factor ** max(0, attempt - 1))
