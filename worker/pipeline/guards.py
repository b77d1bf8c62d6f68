"""Whether an account can send now: its circuit (shared by every worker)
and its daily part cap, behind one face for the pass (``ChunkSender``).

Without them (unit tests of the pass), every account can always send.
"""

from __future__ import annotations

from worker.pipeline.circuit import Circuits, Gate
from worker.pipeline.daily_cap import DailyCaps
from worker.providers.account import Account

OPEN = Gate(send=True, probe=False, wait_s=0.0)


class AccountGuards:
    def __init__(self, circuits: Circuits | None = None, caps: DailyCaps | None = None) -> None:
        self.circuits = circuits
        self.caps = caps

    async def availability(self, account: Account) -> tuple[bool, float | None]:
        """(whether recipients that have another account move there: its
        circuit is open or its daily cap reached; how long those that have
        none wait: None if they may send now). An open circuit whose
        cool-down is over, no probe out, is available: its recipients stay,
        and the request that claims the probe at the gate tests it (the
        others' requests move on at the gate)."""
        if self.circuits is not None:
            cooling_s = await self.circuits.cooling_s(account)
            if cooling_s:
                return True, cooling_s
        if self.caps is not None:
            over_s = await self.caps.over_s(account)
            if over_s is not None:
                return True, over_s
        return False, None

    async def gate(self, account: Account, parts: int) -> Gate:
        """Whether a request of ``parts`` parts may go now: the circuit lets
        it (closed, or it is the probe), and the daily cap has room (taken)."""
        gate = OPEN if self.circuits is None else await self.circuits.gate(account)
        if gate.send and self.caps is not None:
            wait_s = await self.caps.take(account, parts)
            if wait_s is not None:
                return Gate(send=False, probe=False, wait_s=wait_s)
        return gate

    async def record(self, account: Account, gate: Gate, parts: int, not_sent: bool) -> None:
        """After the request: its circuit learns how it went; parts that
        provably sent nothing go back to the daily cap."""
        if self.circuits is not None:
            await self.circuits.record(account, failed=not_sent, probe=gate.probe)
        if not_sent and self.caps is not None:
            await self.caps.give_back(account, parts)

    async def unused(self, account: Account, parts: int) -> None:
        """A request let through that never began (its job stopped, its
        chunk lost): its parts go back to the daily cap."""
        if self.caps is not None:
            await self.caps.give_back(account, parts)
