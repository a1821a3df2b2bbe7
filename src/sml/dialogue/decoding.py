"""Continuous batching: the student's turns decode in a fixed set of batch rows ("slots"), and a slot whose turn
ended takes the next waiting turn while the others go on writing, so no round ends in a ragged tail.

A conversation keeps its slot, and with it its KV cache, from its first turn until it is released: its next
turn only runs the new tokens (the teacher's reply) through the model. Each slot holds one conversation
left-aligned, token ``p`` in column ``p``, so a row needs no padding and its cache can be extended in place
without moving any other row.

Attention ``"by_rows"`` (``Decoder(attention=...)``) splits each attention call into groups of rows, each
reading only as many key columns as its own longest row: a plain call reads every row up to the batch's
longest conversation, which at an evaluation's widths (~1,000 columns, rows ~600 on average) is most of a
step's time on a CPU. Its prefills also go in groups of similar reply length, with less padding. It computes
the same attention as ``"dense"`` up to float rounding, so a sampled token right at a boundary can differ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, Cache
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from sml.dialogue.lean_forward import lean_forward

ATTENTION = ("dense", "by_rows")
# What one more attention call costs, in key columns read by one row (a decode step; a prefill's row reads
# them once per new token): rough, from this CPU's SDPA calls, ~25 us a call against ~0.04 us a column.
CALL_COLUMNS = 600
# What one more prefill forward pass costs, in padded tokens (~4 ms against ~0.09 ms a token).
CALL_TOKENS = 48


class Slots(Cache):
    """A KV cache of ``rows`` slots. Before each forward pass the caller sets which slots it runs (``rows``: a
    tensor, or an int ``b`` for slots ``0..b-1``, which the attention then reads without a copy), the column
    each new token is written to (``write``, one per row and token) and how many columns attention reads
    (``width``). It grows when a write needs more columns (preallocated: a growing cache would copy itself at
    every step)."""

    def __init__(self, rows: int):
        super().__init__(layers=[])
        self.size = rows
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.rows: torch.Tensor | int = rows
        self.write: torch.Tensor | None = None
        self.width = 0

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer: int, *args, **kwargs):
        if layer == len(self.keys):
            shape = (self.size, keys.shape[1], self.width, keys.shape[-1])
            self.keys.append(keys.new_zeros(shape))
            self.values.append(keys.new_zeros(shape))
        if self.keys[layer].shape[2] < self.width:
            grown = max(self.width, 2 * self.keys[layer].shape[2])
            pad = lambda t: torch.nn.functional.pad(t, (0, 0, 0, grown - t.shape[2]))
            self.keys[layer], self.values[layer] = pad(self.keys[layer]), pad(self.values[layer])
        span = isinstance(self.rows, int)
        rows = (torch.arange(self.rows, device=keys.device) if span else self.rows)[:, None]
        out = []
        for cache, new in ((self.keys[layer], keys), (self.values[layer], values)):
            cache[rows, :, self.write] = new.transpose(1, 2)
            visible = cache[:, :, :self.width]
            out.append(visible[:self.rows] if span else visible.index_select(0, self.rows))
        return tuple(out)

    def permute(self, dst: list[int], src: list[int], columns: int) -> None:
        """Slot ``src[k]``'s contents, its first ``columns`` (all that it holds), move to slot ``dst[k]``."""
        for cache in self.keys + self.values:
            cache[dst, :, :columns] = cache[src, :, :columns]


class Decoder:
    """Turns decoding together in ``slots`` batch rows. ``add(key, prompt, stream)`` queues conversation ``key``'s
    next turn; ``step()`` samples one token in every writing slot and returns the turns that ended, as
    ``(key, tokens, ended on its own)``; ``release(key)`` frees the conversation's slot. Queued turns join in
    one prefill once enough of them can (``worth``): a slot whose turn ended sits idle until then. With
    ``reuse``, a slot's cache is kept for the longest prefix its conversation still shares (the student's ids
    only grow, unless a turn was replaced); without, every turn re-reads its whole prompt.

    Randomness: a turn draws ``max_new_tokens`` uniforms from its conversation's own ``stream`` (a
    ``torch.Generator``; None: torch's global one) when it is queued, and samples token k from uniform k, so
    the numbers a conversation draws do not depend on what else shares the batch.

    Forward passes go through ``lean_forward``'s replay of the model where it applies (the same numbers, less
    Python a pass: most of a small model's decode step), else through the model itself."""

    def __init__(self, model, eos_id: int, pad_id: int, slots: int, max_new_tokens: int, temperature: float,
                 top_p: float, reuse: bool = True, attention: str = "dense"):
        if attention not in ATTENTION:
            raise ValueError(f"attention: {attention!r} is not one of {ATTENTION}")
        self.model, self.eos_id, self.pad_id, self.attention = model, eos_id, pad_id, attention
        self.max_new_tokens, self.temperature, self.top_p, self.reuse = max_new_tokens, temperature, top_p, reuse
        self.refill_at = max(1, slots // 8)
        weight = next(model.parameters())
        self.device, self.dtype = weight.device, weight.dtype
        self.lean = lean_forward(model)  # None: the model's own forward (the same numbers, more Python a pass)
        self.cache = Slots(slots)
        self.ids: list[list[int]] = [[] for _ in range(slots)]  # the tokens each slot's cache holds
        self.owner: list[object] = [None] * slots
        self.slot_of: dict = {}
        self.turn: list[list[int] | None] = [None] * slots  # the tokens of each writing slot's turn; None: idle
        self.uniforms = torch.zeros((slots, max_new_tokens))
        self.queue: list[tuple[object, list[int], torch.Tensor]] = []
        self.returning = 0  # queued turns whose conversation holds a slot (after an admission, none: they joined)
        self.logits = None  # each slot's next-token logits

    def add(self, key, prompt: list[int], stream: torch.Generator | None = None) -> None:
        self.queue.append((key, prompt, torch.rand(self.max_new_tokens, generator=stream)))
        self.returning += key in self.slot_of

    def release(self, key) -> None:
        """The conversation is over: its slot takes others (its cache stays, for a new prompt that shares it)."""
        slot = self.slot_of.pop(key, None)
        if slot is not None:
            self.owner[slot] = None

    @property
    def live(self) -> int:
        return sum(t is not None for t in self.turn)

    @property
    def busy(self) -> bool:
        return bool(self.queue) or self.live > 0

    def worth(self, waiting: int) -> bool:
        """Whether ``waiting`` turns are worth a prefill (or a call to the teacher) now: ``refill_at`` of them,
        or as many as are still writing (so the last few turns of a run do not wait for each other)."""
        return waiting >= min(self.refill_at, self.live)

    @torch.no_grad()
    def step(self) -> list[tuple[object, list[int], bool]]:
        ready = self.returning + self.owner.count(None)  # a count, not a scan: the queue may hold thousands
        if self.queue and self.worth(min(ready, len(self.queue))):
            self._admit()
        writing = [s for s, t in enumerate(self.turn) if t is not None]
        if not writing:
            return []
        if writing[-1] + 1 > len(writing) + self.refill_at:
            writing = self._compact(writing)
        drawn = torch.tensor([len(t) if t is not None else 0 for t in self.turn])  # token k takes uniform k
        chosen = _pick(self.logits, self.temperature, self.top_p, self.uniforms[torch.arange(len(self.turn)), drawn])
        tokens, ended, going = chosen.tolist(), [], []
        for s in writing:
            if tokens[s] != self.eos_id:
                self.turn[s].append(tokens[s])
            if tokens[s] == self.eos_id or len(self.turn[s]) == self.max_new_tokens:
                ended.append((self.owner[s], self.turn[s], tokens[s] == self.eos_id))
                self.turn[s] = None
            else:
                going.append(s)
        if going:  # every slot up to the last writing one runs (a slice: no copy); the others' outputs are unused
            span = going[-1] + 1
            at = torch.tensor([len(ids) for ids in self.ids[:span]])[:, None]  # each slot's next column
            logits = self._forward(span, chosen[:span, None], at)
            self.logits[:span] = logits
            for s in going:
                self.ids[s].append(tokens[s])
        return ended

    def _compact(self, writing: list[int]) -> list[int]:
        """Swap the writing slots into the lowest ones: a decoding step runs every slot up to the last writing
        one, and once most have ended (the tail of a run) the idle ones would cost as much as the rest."""
        low = [s for s in range(len(writing)) if self.turn[s] is None]
        high = [s for s in writing if s >= len(writing)]
        dst, src = low + high, high + low
        source = list(range(len(self.turn)))
        for d, s in zip(dst, src):
            source[d] = s
        self.cache.permute(dst, src, max((len(self.ids[s]) for s in src), default=0))
        for state in (self.ids, self.owner, self.turn):
            state[:] = [state[s] for s in source]
        self.uniforms[dst], self.logits[dst] = self.uniforms[src], self.logits[src]
        self.slot_of.update({key: s for s, key in enumerate(self.owner) if key is not None})
        return list(range(len(writing)))

    def _admit(self) -> None:
        """Prefill the queued turns that have a slot or find a free one, in one forward pass (left-padded)."""
        joining, waiting = [], []
        free = [s for s, key in enumerate(self.owner) if key is None][::-1]  # the lowest first, from the end
        for key, prompt, uniforms in self.queue:
            slot = self.slot_of.get(key)
            if slot is None and free:
                slot = self.slot_of[key] = free.pop()
                self.owner[slot] = key
            if slot is None:
                waiting.append((key, prompt, uniforms))
            else:
                joining.append((slot, prompt, uniforms))
        self.queue, self.returning = waiting, 0
        starts = []
        for slot, prompt, uniforms in joining:
            kept = _shared_prefix(self.ids[slot], prompt) if self.reuse else 0
            starts.append(min(kept, len(prompt) - 1))  # at least one token to read: its logits are the next's
            self.ids[slot], self.turn[slot], self.uniforms[slot] = list(prompt), [], uniforms
        if self.attention == "dense":
            self._prefill(joining, starts)
            return
        # passes of similar reply lengths (less padding), each with its rows longest conversation first
        fresh = [len(prompt) - start for (_, prompt, _), start in zip(joining, starts)]
        by_length = sorted(range(len(joining)), key=lambda r: -fresh[r])
        for first, end, _ in row_groups([fresh[r] for r in by_length], CALL_TOKENS):
            rows = sorted(by_length[first:end], key=lambda r: -starts[r])
            self._prefill([joining[r] for r in rows], [starts[r] for r in rows])

    def _prefill(self, joining: list[tuple[int, list[int], torch.Tensor]], starts: list[int]) -> None:
        """One forward pass over the new tokens of the turns ``joining`` (slot, prompt, uniforms), each read
        from its ``start`` (left-padded)."""
        fresh = [prompt[start:] for (_, prompt, _), start in zip(joining, starts)]
        width = max(map(len, fresh))
        ids = torch.full((len(fresh), width), self.pad_id, dtype=torch.long)
        # token j of a row's new tokens goes to column start + j; the left pads go after them (columns that the
        # next decoded tokens overwrite before anything reads them)
        write = torch.empty((len(fresh), width), dtype=torch.long)
        for row, (tokens, start) in enumerate(zip(fresh, starts)):
            pads = width - len(tokens)
            ids[row, pads:] = torch.tensor(tokens)
            write[row] = torch.cat([torch.arange(start + len(tokens), start + width),
                                    torch.arange(start, start + len(tokens))])
        slots = torch.tensor([slot for slot, *_ in joining])
        logits = self._forward(slots, ids, write)
        if self.logits is None:
            self.logits = logits.new_zeros((len(self.turn), logits.shape[-1]))
        self.logits[slots.to(logits.device)] = logits

    def _forward(self, rows, ids: torch.Tensor, write: torch.Tensor) -> torch.Tensor:
        """Run ``ids`` (one row per slot in ``rows``), token (r, j) at position and column ``write[r, j]``,
        attending the columns up to its own; the logits after each row's last token."""
        self.cache.rows = rows if isinstance(rows, int) else rows.to(self.device)
        self.cache.width = int(write.max()) + 1
        self.cache.write = write = write.to(self.device)
        visible = torch.arange(self.cache.width, device=self.device) <= write[:, :, None]
        # additive (0 / -inf) in the model's dtype, made once: given a boolean mask, SDPA converts it in every layer
        mask = torch.zeros(visible.shape, dtype=self.dtype, device=self.device).masked_fill_(~visible, float("-inf"))
        ids, mask = ids.to(self.device), mask[:, None]
        groups = [] if self.attention == "dense" else row_groups((write.max(1).values + 1).tolist(),
                                                                  CALL_COLUMNS / ids.shape[1])
        runs = groups if len(groups) > 1 else None  # one run: one call either way, transformers' own attention
        if self.lean is not None:
            attend = lambda module, *qkv_mask: _sdpa_by_rows(module, *qkv_mask, scaling=module.scaling, dropout=0.0,
                                                             sml_row_runs=runs)
            return self.lean(ids, mask, write, self.cache, attend)
        inputs = dict(input_ids=ids, attention_mask=mask, position_ids=write, past_key_values=self.cache,
                      use_cache=True, logits_to_keep=1)
        if runs is None:
            return self.model(**inputs).logits[:, -1]
        config = self.model.config
        default, config._attn_implementation = config._attn_implementation, "sml_by_rows"
        try:
            return self.model(**inputs, sml_row_runs=runs).logits[:, -1]
        finally:
            config._attn_implementation = default


class Rounds:
    """``Decoder``'s interface for students that sample elsewhere (a server, vLLM, a script: a ``generate`` of
    their own): every queued turn goes into one ``generate`` call, so conversations advance in rounds."""
    live = 0

    def __init__(self, student, max_new_tokens: int, sampling: dict):
        self.student, self.max_new_tokens, self.sampling, self.queue = student, max_new_tokens, sampling, []

    def add(self, key, prompt: list[int], stream: torch.Generator | None = None) -> None:
        self.queue.append((key, prompt, stream))

    def release(self, key) -> None:
        pass

    def worth(self, waiting: int) -> bool:
        return True

    @property
    def busy(self) -> bool:
        return bool(self.queue)

    def step(self) -> list[tuple[object, list[int], bool]]:
        keys, prompts, streams = zip(*self.queue)
        self.queue = []
        out = self.student.generate(list(prompts), self.max_new_tokens, streams=list(streams), **self.sampling)
        return [(key, ids, ended) for key, (ids, ended) in zip(keys, out)]


def row_groups(widths: list[int], call_cost: float, candidates: int = 32) -> list[tuple[int, int, int]]:
    """Split rows ``0..n-1`` into runs of neighbours ``(first, end, width)``, ``width`` the longest of the
    run's ``widths``, that minimise the columns read (rows x width, summed over runs) plus ``call_cost`` per
    run. Runs start only at up to ``candidates`` evenly spaced rows, which keeps this cheap for many rows."""
    n = len(widths)
    stride = max(1, -(-n // candidates))
    cuts = list(range(0, n, stride)) + [n]
    blocks = [max(widths[a:b]) for a, b in zip(cuts, cuts[1:])]  # the longest row between neighbouring cuts
    best, back = [0.0] + [float("inf")] * (len(cuts) - 1), [0] * len(cuts)
    for j in range(1, len(cuts)):
        longest = 0
        for i in range(j - 1, -1, -1):
            longest = max(longest, blocks[i])
            cost = best[i] + (cuts[j] - cuts[i]) * longest + call_cost
            if cost < best[j]:
                best[j], back[j] = cost, i
    runs, j = [], len(cuts) - 1
    while j > 0:
        i = back[j]
        runs.append((cuts[i], cuts[j], max(blocks[i:j])))
        j = i
    return runs[::-1]


def _sdpa_by_rows(module, query, key, value, attention_mask, scaling=None, dropout=0.0, sml_row_runs=None,
                  **kwargs):
    """Transformers' SDPA attention, run per run of rows ``(first, end, width)`` (``row_groups``) on the first
    ``width`` key columns only (without ``sml_row_runs``: transformers' own). The heads that share a key head
    go in one call (for one query token, as its queries; for several, with ``enable_gqa``), not copied per head."""
    if sml_row_runs is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    shared = getattr(module, "num_key_value_groups", 1)
    out = []
    for first, end, width in sml_row_runs:
        q, mask = query[first:end], attention_mask[first:end, :, :, :width]
        k, v = key[first:end, :, :width], value[first:end, :, :width]
        if q.shape[2] == 1 and shared > 1:
            o = F.scaled_dot_product_attention(q.reshape(end - first, -1, shared, q.shape[-1]), k, v,
                                               attn_mask=mask, scale=scaling)
            out.append(o.reshape(q.shape))
        else:
            out.append(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling, enable_gqa=shared > 1))
    return torch.cat(out).transpose(1, 2).contiguous(), None


AttentionInterface.register("sml_by_rows", _sdpa_by_rows)


def _shared_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    return next(i for i in range(n) if a[i] != b[i])


def _pick(logits: torch.Tensor, temperature: float, top_p: float, uniform: torch.Tensor) -> torch.Tensor:
    """Greedy at temperature 0, else a sample from the temperature-scaled, top-p-truncated distribution: the
    inverse of each row's CDF at its ``uniform`` (one number in [0, 1) per row)."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        drop = sorted_probs.cumsum(-1) - sorted_probs > top_p  # keep the smallest set reaching top_p
        sorted_probs[drop] = 0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    cdf = probs.cumsum(-1)
    u = uniform.to(cdf.device) * cdf[:, -1]  # the CDF's last value, which rounding keeps near 1
    return torch.searchsorted(cdf, u[:, None], right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)
