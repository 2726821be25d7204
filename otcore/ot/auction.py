"""Batched epsilon-optimal min-cost perfect assignment: Bertsekas' auction with epsilon-scaling.

One auction runs over a batch of ``[n, n]`` cost matrices at once (Jacobi variant, vectorised in torch on the
device of the costs). In certified mode it stops once a dual bound proves every batch's cost within
``AUCTION_REL_TOL`` (1e-3) relative of its optimum; :func:`otcore.points.em_kd.em_kd` runs it over all k-d leaves,
warm-started by prices from a coarse matching of k-d sub-leaves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from otcore.errors import OTConvergenceError

__all__ = ["AUCTION_REL_TOL", "AuctionResult", "auction_assignment"]

# Default accuracy of the auction: every batch's (leaf's) cost is certified within this fraction of its optimum.
AUCTION_REL_TOL = 1e-3
_AUCTION_SCALING = 0.1  # epsilon factor between phases
_AUCTION_MAX_ROUNDS = 1_000_000
_EPS0_FRAC = 0.02  # first epsilon, as a fraction of the cost range
_TAIL_ROWS = 16  # a batch with at most this many unassigned rows is in its end game ...
_LOWER_EVERY = 16  # ... and gets its free columns' prices lowered every this many rounds
_HEAVY_FREE = 64  # above this many free columns, lower them with one pass over the batch's cost matrix
_MAX_BIDDERS = 2048  # at most this many rows bid per round (a spread subset): fewer wasted, colliding bids
_SMALL_ROWS = 512  # on CPU, rounds with at most this many bidders run in numpy (less overhead per call)

_I64_MIN = -(2**63)


@dataclass(frozen=True)
class AuctionResult:
    """Outcome of :func:`auction_assignment`.

    Attributes:
        assignment: int64 ``[B, n]``: the column assigned to each row (a permutation per batch).
        cost: float64 ``[B]``: total (summed) cost of the assignment.
        epsilon: the final epsilon in classic mode; in certified mode the largest certified gap over batches
            divided by ``n``. Either way each batch's cost is at most its optimum ``+ n * epsilon``.
        rounds: bidding rounds run (in each, every unassigned row of every unfinished batch bids once).
    """

    assignment: torch.Tensor
    cost: torch.Tensor
    epsilon: float
    rounds: int


def _sortable(values: torch.Tensor) -> torch.Tensor:
    """int64 keys with the order of float32 ``values`` (IEEE bits, negative values' magnitude bits flipped)."""
    bits = values.view(torch.int32)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)


class _Auction:
    """State of a batched Jacobi auction on a cost tensor ``[B, n, n_pad]`` (min-cost form, prices on columns).

    Unassigned rows bid for the column of least reduced cost ``c_ij + p_j`` and raise its price by the gap to their
    second-best column plus epsilon; each column goes to its highest bidder (Bertsekas 1988). Rows are scanned in
    chunks through preallocated buffers, columns in ``n_pad / block`` strided blocks (block minima, then the best
    block). Every batch runs its own epsilon-scaling phases (:meth:`_end_phase`).

    End game: while a batch has few unassigned rows, the price of each of its free columns ``f`` is lowered now and
    then to the least value that keeps every assigned row epsilon-complementary-slack, ``max_i (u_i - c_if) - eps``
    with ``u_i`` the reduced cost of row ``i``'s column (the price half of a reverse-auction step, Bertsekas &
    Castañon 1992, "A forward/reverse auction algorithm for asymmetric assignment problems"). Slackness holds for
    every row throughout, so the bounds are unchanged; it shortens the walk of displaced rows in search of a free
    column whose price is too high. On CPU, rounds with few bidders run in numpy, whose per-call overhead is a
    fraction of torch's.
    """

    def __init__(self, work: torch.Tensor, block: int, prices: torch.Tensor | None) -> None:
        batch, n, n_pad = work.shape
        device, dtype = work.device, work.dtype
        self.batch, self.n, self.n_pad, self.block = batch, n, n_pad, block
        self.n_blocks = n_pad // block
        total = batch * n
        self.total = total
        self.work = work
        self.flat = work.view(total, n_pad)
        self.prices = torch.zeros(batch, n_pad, dtype=dtype, device=device)
        if prices is not None:
            self.prices[:, :n] = prices
        self.prices_flat = self.prices.view(-1)  # flat column: b * n_pad + j
        self.assign = torch.full((total + 1,), -1, dtype=torch.int64, device=device)  # slot `total`: sink
        self.owner = torch.full((batch, n_pad), -2, dtype=torch.int64, device=device)  # -2: padding column
        self.owner[:, :n] = total  # `total`: free
        self.owner_flat = self.owner.view(-1)
        self.reduced = torch.full((total + 1,), -math.inf, dtype=dtype, device=device)  # u_i; -inf: unassigned
        self.packed = dtype == torch.float32
        self.best_key = torch.full((batch * n_pad,), _I64_MIN, dtype=torch.int64, device=device)
        self.best_bid = torch.full((batch * n_pad,), -math.inf, dtype=dtype, device=device)
        self.best_row = torch.full((batch * n_pad,), -1, dtype=torch.int64, device=device)
        self.arange_n = torch.arange(n, device=device)
        self.chunk = max(1, min(total, (1 << 20) // n_pad))
        self.buf_cost = torch.empty(self.chunk, n_pad, dtype=dtype, device=device)
        self.buf_price = torch.empty(self.chunk, n_pad, dtype=dtype, device=device)
        self.rounds = 0

    # -- bids -------------------------------------------------------------------------------------------------------

    def _scan(self, rows: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Least reduced cost ``[U]``, its flat column ``[U]`` and the second least ``[U]`` of each row."""
        nb, s = self.n_blocks, self.block
        parts = []
        for start in range(0, rows.numel(), self.chunk):
            r, bb = rows[start : start + self.chunk], b[start : start + self.chunk]
            u = r.numel()
            reduced = torch.index_select(self.flat, 0, r, out=self.buf_cost[:u])
            reduced.add_(torch.index_select(self.prices, 0, bb, out=self.buf_price[:u]))
            # Block k holds the columns t * nb + k (t < s): block minima reduce over a strided axis, which
            # vectorises across blocks.
            grid = reduced.view(u, s, nb)
            block_min = grid.amin(1)
            best, blk = block_min.min(1)
            other = block_min.scatter_(1, blk[:, None], math.inf).amin(1)
            inside = grid.gather(2, blk[:, None, None].expand(u, s, 1)).squeeze(2)
            _, pos = inside.min(1)
            second = inside.scatter_(1, pos[:, None], math.inf).amin(1)
            parts.append((best, bb * self.n_pad + pos * nb + blk, torch.minimum(second, other)))
        if len(parts) == 1:
            return parts[0]
        return tuple(torch.cat(p) for p in zip(*parts))  # type: ignore[return-value]

    def _round(self, rows: torch.Tensor, b: torch.Tensor) -> None:
        """One Jacobi round: every row of ``rows`` (batches ``b``) bids, each column goes to its highest bidder."""
        best, col, second = self._scan(rows, b)
        raise_by = (second - best).add_(self.eps[b])
        bid = self.prices_flat[col] + raise_by
        if self.packed:  # one scatter: the key orders by bid, then by row
            key = (_sortable(bid) << 32) | rows
            self.best_key.scatter_reduce_(0, col, key, "amax")
            win = (key == self.best_key[col]).nonzero().squeeze(1)
            self.best_key.index_fill_(0, col, _I64_MIN)
        else:
            self.best_bid.scatter_reduce_(0, col, bid, "amax")
            top = (bid == self.best_bid[col]).nonzero().squeeze(1)
            self.best_row.scatter_reduce_(0, col[top], rows[top], "amax")
            win = top[self.best_row[col[top]] == rows[top]]
            self.best_bid.index_fill_(0, col, -math.inf)
            self.best_row.index_fill_(0, col, -1)
        won_col, won_row = col[win], rows[win]
        loser = self.owner_flat[won_col]
        self.assign[loser] = -1
        self.reduced[loser] = -math.inf
        self.owner_flat[won_col] = won_row
        self.assign[won_row] = won_col
        self.prices_flat[won_col] = bid[win]
        self.reduced[won_row] = (best + raise_by)[win]

    def _small_rounds(self, rows: torch.Tensor, lower: bool) -> None:
        """:meth:`_round` in numpy (CPU) for a handful of bidders, repeated until some batch is fully assigned."""
        n, n_pad, total = self.n, self.n_pad, self.total
        flat, prices2d = self.flat.numpy(), self.prices.numpy()
        prices, assign, owner = self.prices_flat.numpy(), self.assign.numpy(), self.owner_flat.numpy()
        reduced, eps = self.reduced.numpy(), self.eps.numpy()
        rows_np = rows.numpy()
        n_batches = np.unique(rows_np // n).size
        while self.rounds < self.max_rounds:
            self.rounds += 1
            b = rows_np // n
            values = flat[rows_np]
            values += prices2d[b]
            ar = np.arange(rows_np.size)
            j = values.argmin(1)
            best = values[ar, j]
            values[ar, j] = np.inf
            raise_by = values.min(1) - best + eps[b]
            col = b * n_pad + j
            bid = prices[col] + raise_by
            if rows_np.size > 1 and np.unique(col).size < col.size:
                order = np.lexsort((-rows_np, -bid, col))
                first = np.ones(rows_np.size, dtype=bool)
                first[1:] = col[order[1:]] != col[order[:-1]]
                win = order[first]
                won_col, won_row = col[win], rows_np[win]
                lost = np.ones(rows_np.size, dtype=bool)
                lost[win] = False
                remaining = rows_np[lost]
                bid, best = bid[win], (best + raise_by)[win]
            else:  # no collision: every bid wins
                won_col, won_row, remaining = col, rows_np, rows_np[:0]
                best += raise_by
            loser = owner[won_col]
            assign[loser] = -1
            reduced[loser] = -np.inf
            owner[won_col] = won_row
            assign[won_row] = won_col
            prices[won_col] = bid
            reduced[won_row] = best
            displaced = loser[loser != total]
            if displaced.size < loser.size:  # a free column was taken: maybe a batch is complete
                rows_np = np.concatenate([remaining, displaced])
                if rows_np.size == 0 or np.unique(rows_np // n).size < n_batches:
                    return
            else:
                rows_np = np.concatenate([remaining, displaced])
            if lower and self.rounds % _LOWER_EVERY == 0:
                self._lower_free_np(np.unique(rows_np // n))

    # -- free-column prices -------------------------------------------------------------------------------------

    def _lower_free(self, batches: torch.Tensor) -> None:
        """Lower the prices of the free columns of ``batches`` (bool ``[B]``) to their slackness bound."""
        n, n_pad = self.n, self.n_pad
        free = (self.owner == self.total) & batches[:, None]
        heavy = (free.sum(1) > _HEAVY_FREE).nonzero().squeeze(1)
        if heavy.numel():  # many free columns: reduce over the rows of whole cost matrices
            for start in range(0, heavy.numel(), 8):
                hb = heavy[start : start + 8]
                cover = (self.reduced[:-1].view(self.batch, n)[hb][:, :, None] - self.work[hb]).amax(1)
                bound = cover - self.eps[hb][:, None]
                bound = torch.where(free[hb] & torch.isfinite(bound), bound, math.inf)
                self.prices[hb] = torch.minimum(self.prices[hb], bound)
            free[heavy] = False
        free_b, free_j = free.nonzero().unbind(1)
        if free_b.numel() == 0:
            return
        cover = self.reduced[:-1].view(self.batch, n).index_select(0, free_b)
        cover.sub_(self.work[free_b, :, free_j])
        bound = cover.amax(1) - self.eps[free_b]
        col = free_b * n_pad + free_j
        current = self.prices_flat[col]
        self.prices_flat[col] = torch.where(torch.isfinite(bound), torch.minimum(current, bound), current)

    def _lower_free_np(self, batches: np.ndarray) -> None:
        """:meth:`_lower_free` for a few batches on CPU, in numpy."""
        work, owner, prices, eps = self.work.numpy(), self.owner.numpy(), self.prices.numpy(), self.eps.numpy()
        reduced = self.reduced[:-1].numpy().reshape(self.batch, self.n)
        for batch in batches:
            free = np.flatnonzero(owner[batch] == self.total)
            if free.size == 0 or free.size > _HEAVY_FREE:
                continue
            bound = (reduced[batch][:, None] - work[batch][:, free]).max(0) - eps[batch]
            ok = np.isfinite(bound)
            prices[batch, free[ok]] = np.minimum(prices[batch, free[ok]], bound[ok])

    # -- phases -------------------------------------------------------------------------------------------------

    def _end_phase(self, batches: torch.Tensor) -> None:
        """Certify the fully assigned ``batches``; finish them or start their next phase with a smaller epsilon.

        With the row minima ``m_i = min_j c_ij + p_j``, every price is first lowered to the least value that keeps
        them, ``p_j = max_i (m_i - c_ij)`` (slackness only improves). Then ``D = sum_i m_i - sum_j p_j``, the dual
        value of the prices, is a lower bound of the optimum, and the assignment's cost exceeds it by the summed
        slack ``sum_i (c_i,phi(i) + p_phi(i) - m_i)`` (at most ``n * eps``), both up to a rounding margin. In
        certified mode a batch is finished once that gap is at most ``rel_tol * D``; otherwise epsilon shrinks by
        ``scaling`` (to no less than ``rel_tol * D / n``, which is sure to finish the next phase) and the rows whose
        slack exceeds the new epsilon are unassigned.
        """
        n, n_pad = self.n, self.n_pad
        k = batches.numel()
        rows = (batches[:, None] * n + self.arange_n).view(-1)
        best, _, _ = self._scan(rows, batches.repeat_interleave(n))
        minima = best.view(k, n)
        for i, batch in enumerate(batches.tolist()):
            self.prices[batch, :n] = (minima[i][:, None] - self.work[batch, :, :n]).amax(0)
        col = self.assign[rows]
        own = torch.take(self.flat, rows * n_pad + col % n_pad) + self.prices_flat[col]
        self.reduced[rows] = own
        slack = (own - best).clamp_(min=0.0)
        prices = self.prices[batches, :n]
        margin = 4.0 * n * torch.finfo(best.dtype).eps * (minima.abs().amax(1) + prices.abs().amax(1)).double()
        gap = slack.view(k, n).sum(1, dtype=torch.float64) + margin
        dual = minima.sum(1, dtype=torch.float64) - prices.sum(1, dtype=torch.float64) - margin
        eps = self.eps[batches]
        if self.rel_tol is None:
            finish = eps <= self.eps_target[batches]
        else:
            finish = (gap <= self.rel_tol * dual) | (eps <= self.floor[batches])
        self.gap[batches] = torch.where(finish, gap, self.gap[batches])
        self.done[batches[finish]] = True
        keep = ~finish
        if not bool(keep.any()):
            return
        cont = batches[keep]
        eps = eps[keep] * self.scaling
        if self.rel_tol is None:
            eps = torch.maximum(eps, self.eps_target[cont])
        else:
            eps = torch.maximum(eps, (self.rel_tol * dual[keep] / n).to(eps.dtype))
        self.eps[cont] = torch.maximum(eps, self.floor[cont])
        drop = rows.view(k, n)[keep][slack.view(k, n)[keep] > self.eps[cont][:, None]]
        self.owner_flat[self.assign[drop]] = self.total
        self.assign[drop] = -1
        self.reduced[drop] = -math.inf
        mask = torch.zeros(self.batch, dtype=torch.bool, device=batches.device)
        mask[cont] = True
        self._lower_free(mask)

    def run(
        self,
        eps_start: torch.Tensor,
        eps_target: torch.Tensor,
        rel_tol: float | None,
        floor: torch.Tensor,
        scaling: float,
        max_rounds: int,
    ) -> None:
        """Bid until every batch is finished (see :meth:`_end_phase`); ``rel_tol=None``: run to ``eps_target``."""
        n, total = self.n, self.total
        device = eps_start.device
        self.eps = torch.maximum(eps_start, floor)
        self.eps_target, self.rel_tol, self.floor, self.scaling = eps_target, rel_tol, floor, scaling
        self.max_rounds = max_rounds
        self.done = torch.zeros(self.batch, dtype=torch.bool, device=device)
        self.gap = torch.zeros(self.batch, dtype=torch.float64, device=device)
        small = device.type == "cpu" and _SMALL_ROWS > 0
        last_unassigned = -1
        tail = None
        while True:
            rows = (self.assign[:total] < 0).nonzero().squeeze(1)
            b = torch.div(rows, n, rounding_mode="floor")
            if rows.numel() != last_unassigned:  # some batch's count changed: phases, end game
                pending = torch.bincount(b, minlength=self.batch)
                finished = ((pending == 0) & ~self.done).nonzero().squeeze(1)
                if finished.numel():
                    self._end_phase(finished)
                    last_unassigned = -1
                    continue
                tail = (pending > 0) & (pending <= _TAIL_ROWS)
                tail = tail if bool(tail.any()) else None
                last_unassigned = rows.numel()
            if rows.numel() == 0:
                return
            if self.rounds >= max_rounds:
                raise OTConvergenceError(
                    f"auction did not finish in {max_rounds} rounds ({rows.numel()} rows still unassigned)"
                )
            if small and rows.numel() <= _SMALL_ROWS:
                self._small_rounds(rows, tail is not None)
                last_unassigned = -1
                continue
            self.rounds += 1
            if rows.numel() > _MAX_BIDDERS:  # block Gauss-Seidel: a spread subset bids, fewer collisions
                stride = -(-rows.numel() // _MAX_BIDDERS)
                rows, b = rows[self.rounds % stride :: stride], b[self.rounds % stride :: stride]
            self._round(rows, b)
            if tail is not None and self.rounds % _LOWER_EVERY == 0:
                self._lower_free(tail)


def _auction(
    cost: torch.Tensor,
    epsilon: float | None,
    scaling: float,
    max_rounds: int,
    prices: torch.Tensor | None = None,
    relative_tolerance: float = AUCTION_REL_TOL,
) -> AuctionResult:
    """:func:`auction_assignment` on a validated ``cost``, optionally from initial prices ``[B, n]``."""
    batch, n, _ = cost.shape
    device, dtype = cost.device, cost.dtype
    low = cost.amin((1, 2))
    span = cost.amax((1, 2)) - low
    floor = 64.0 * torch.finfo(dtype).eps * torch.clamp(span, min=torch.finfo(dtype).tiny)
    if epsilon is None:
        rel_tol: float | None = relative_tolerance
        target = floor
    else:
        rel_tol = None
        target = torch.clamp(torch.full_like(span, epsilon), min=floor)
    if n == 1:
        assignment = torch.zeros(batch, 1, dtype=torch.int64, device=device)
        rounds = 0
        gap = torch.zeros(batch, dtype=torch.float64, device=device)
    else:
        block = min(32, n)
        n_pad = -(-n // block) * block
        if n_pad == n:
            work = cost.contiguous()
        else:
            work = torch.full((batch, n, n_pad), math.inf, dtype=dtype, device=device)
            work[:, :, :n] = cost
        state = _Auction(work, block, prices)
        state.run(torch.maximum(span * _EPS0_FRAC, target), target, rel_tol, floor, scaling, max_rounds)
        assignment = (state.assign[: batch * n] % n_pad).view(batch, n)
        rounds = state.rounds
        gap = state.gap
    total = cost.gather(2, assignment[:, :, None]).squeeze(2).to(torch.float64).sum(1)
    bound = float(target.max()) if rel_tol is None else float(gap.max()) / n
    return AuctionResult(assignment, total, bound, rounds)


def auction_assignment(
    cost: torch.Tensor,
    epsilon: float | None = None,
    scaling: float = _AUCTION_SCALING,
    max_rounds: int = _AUCTION_MAX_ROUNDS,
    prices: torch.Tensor | None = None,
    relative_tolerance: float = AUCTION_REL_TOL,
) -> AuctionResult:
    """Batched epsilon-optimal min-cost perfect assignment (Bertsekas auction with epsilon-scaling).

    Bertsekas, "The auction algorithm: a distributed relaxation method for the assignment problem" (Ann. Oper.
    Res. 1988), with epsilon-scaling as in Bertsekas & Castañon, "The auction algorithm for the transportation
    problem" (Ann. Oper. Res. 1989), and the Jacobi (synchronous) variant of Bertsekas & Castañon, "Parallel
    synchronous and asynchronous implementations of the auction algorithm" (Parallel Computing 1991): all unassigned
    rows of all batches bid at once, each column goes to its highest bidder (ties to the higher row index).
    Every batch runs its own phases: as soon as it is fully assigned, its dual value ``D`` (row minima of the reduced
    costs minus the prices, a lower bound of its optimum) is compared with its cost; it stops once the gap is
    certified small enough, else epsilon shrinks by ``scaling`` and the rows that lost epsilon-complementary
    slackness are unassigned, keeping the prices. Vectorised in torch on the device of ``cost``, with one host sync
    per round (the list of unassigned rows).

    Args:
        cost: ``[B, n, n]`` float32 or float64 tensor of finite costs (any units; ``cost[b, i, j]`` = row ``i`` to
            column ``j``).
        epsilon: ``None`` (default): certified mode, each batch stops once its cost is provably within
            ``AUCTION_REL_TOL`` (``1e-3``) of its optimum for non-negative costs (cost ``- D <= 1e-3 * D``).
            A number: classic mode, phases run down to this final epsilon (cost units). Either way epsilon is kept
            at least ``64 *`` machine epsilon ``*`` the batch's cost range (the resolution of the price
            arithmetic).
        scaling: epsilon factor between phases, in ``(0, 1)``.
        max_rounds: cap on bidding rounds.
        prices: optional ``[B, n]`` initial column prices (cost units), e.g. a coarse problem's dual; a warm start
            only: the guarantee above does not depend on it.
        relative_tolerance: the certified mode's relative gap (default ``AUCTION_REL_TOL``); a looser one (e.g.
            1e-2 for QAAD_GREEDY's initial bijection) saves the last, most expensive phases.

    Returns:
        :class:`AuctionResult`; each batch's cost is at most its optimum ``+ n * epsilon``.

    Raises:
        ValueError: on a bad shape or dtype, non-finite costs, ``epsilon <= 0`` or ``scaling`` outside ``(0, 1)``.
        OTConvergenceError: if ``max_rounds`` rounds do not finish the assignment.
    """
    if not isinstance(cost, torch.Tensor) or cost.ndim != 3 or cost.shape[1] != cost.shape[2] or cost.shape[1] < 1:
        raise ValueError(f"cost must be a [B, n, n] tensor with n >= 1, got {getattr(cost, 'shape', type(cost))}")
    if cost.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"cost must be float32 or float64, got {cost.dtype}")
    if not 0.0 < scaling < 1.0:
        raise ValueError(f"scaling must be in (0, 1), got {scaling}")
    if epsilon is not None and not epsilon > 0.0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    if not relative_tolerance > 0.0:
        raise ValueError(f"relative_tolerance must be positive, got {relative_tolerance}")
    if not bool(torch.isfinite(cost).all()):
        raise ValueError("cost has non-finite entries")
    return _auction(cost, epsilon, scaling, max_rounds, prices, relative_tolerance)
