"""The Redis meter backend: rules 2-6 of the meter in one Lua script (`add.lua`), shared
by every process. Every key of one entity carries the hash tag `{entity}`, and a script call
updates the entities of one Redis Cluster slot, so it touches one slot."""

from __future__ import annotations

import binascii
import json
import struct
from collections.abc import Sequence
from importlib import resources
from itertools import repeat
from typing import Any, NamedTuple, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from consentry.binary import binary_parts
from consentry.scraping.arrays import run_starts
from consentry.scraping.meter.rule import ALERT_LEVELS, I64, Alert, BatchBounds, Bounds, bucket_cap
from consentry.scraping.rules import Terms

__all__ = ["RedisMeter", "hash_tags"]

_ADD_SCRIPT = resources.files(__package__).joinpath("add.lua").read_text(encoding="utf-8")
"""The batch update (rules 2-6; ARGV[1] the batch, ARGV[2] the alert levels)."""

_LEVELS_ARG = struct.pack(f"<{len(ALERT_LEVELS)}d", *ALERT_LEVELS)
"""ALERT_LEVELS as the script reads them (ARGV[2]: ascending little-endian doubles)."""

_LEVELS_TAIL = b"\r\n$%d\r\n%s\r\n" % (len(_LEVELS_ARG), _LEVELS_ARG)
"""What follows each call's batch blob: the end of the blob, then ARGV[2] as a bulk string."""


def hash_tags(entities: pa.Array) -> pa.Array:
    """Each entity name as a Redis Cluster hash tag (the text between `{` and `}`).

    1. `%`, `{` and `}` are written `%25`, `%7B` and `%7D`: a brace would end the tag early,
       and escaping `%` first keeps distinct names distinct.
    2. The empty name is written `%00` (which step 1 never produces): Redis Cluster hashes
       the whole key when the tag is empty, which would put an entity's two keys in
       different slots.
    """
    tags = pc.replace_substring(entities.cast(pa.string()), "%", "%25")
    tags = pc.replace_substring(pc.replace_substring(tags, "{", "%7B"), "}", "%7D")
    return pc.if_else(pc.equal(tags, ""), pa.scalar("%00"), tags)


_STATE = struct.Struct("<6d")
"""Head of an entity's state string in Redis (`_ADD_SCRIPT`): top bucket, total,
latest_us, armed level, late rows, n; then n (bucket, posts) pairs sorted by bucket (all
little-endian doubles: exact for integers below 2**53)."""

_SLOTS = 16384
"""Redis Cluster hash slots: CRC16 (XMODEM, `binascii.crc_hqx`) of the hash tag mod 16384."""


def _bulk_join(*parts: pa.Array | pa.Scalar | str | bytes) -> pa.Array:
    """Element-wise concatenation of strings/binaries (scalars broadcast) as large_binary."""
    args = [pa.scalar(p, pa.binary()) if isinstance(p, str | bytes) else p for p in parts]
    args = [p.cast(pa.binary()) for p in args]
    return pc.binary_join_element_wise(*args, pa.scalar(b"", pa.binary())).cast(pa.large_binary())


def _bulk_strings(text: pa.Array) -> pa.Array:
    """RESP bulk strings `$len CRLF value CRLF` of each element (lengths in bytes)."""
    lengths = pc.binary_length(text).cast(pa.string())
    return _bulk_join("$", lengths, "\r\n", text, "\r\n")


class _Calls(NamedTuple):
    """A batch's entities grouped into script calls, one per Redis Cluster slot.

    Per entity, in batch order: `starts` its first row, `rows` its row count, `tags` its
    hash tag. `order`: the entities in call order; per call, `call_first` the position of
    its first entity in `order` and `per_call` its entity count; `call_of`: the call of
    each entity in call order.
    """

    starts: I64
    rows: I64
    tags: pa.Array
    order: I64
    call_first: I64
    per_call: I64
    call_of: I64


def _piece_order(calls: _Calls) -> I64:
    """The order in which `RedisMeter._commands` takes its pieces: per call its header, its
    entities' keys, its blob's length, its blob and the alert levels.

    The pieces are numbered as concatenated there: the headers (one per call), the keys
    (one per entity, in call order), the blob lengths, the blobs, then the alert levels
    (one piece, taken once per call).
    """
    n_calls, n_entities = len(calls.call_first), len(calls.order)
    call_first, per_call, call_of = calls.call_first, calls.per_call, calls.call_of
    # Each call's first piece: four pieces per earlier call plus the earlier entities' keys.
    call_at = 4 * np.arange(n_calls) + call_first
    order = np.empty(4 * n_calls + n_entities, dtype=np.int64)
    order[call_at] = np.arange(n_calls)
    key_at = call_at[call_of] + 1 + np.arange(n_entities) - call_first[call_of]
    order[key_at] = n_calls + np.arange(n_entities)
    order[call_at + 1 + per_call] = n_calls + n_entities + np.arange(n_calls)
    order[call_at + 2 + per_call] = 2 * n_calls + n_entities + np.arange(n_calls)
    order[call_at + 3 + per_call] = 3 * n_calls + n_entities
    return order


def _parse_replies(
    names: Sequence[str],
    replies: list[Any],
    ran: npt.NDArray[np.bool_],
    entity_codes: I64,
    call_first: I64,
    per_call: I64,
) -> tuple[I64, list[tuple[int, Alert]]]:
    """The reply rows and the alerts (with their entity codes) of the calls that ran.

    1. A call's reply starts with four doubles per entity of the call, in call order:
       lower, upper, latest instant, counted (1 or 0); the rows of all calls are read as
       one array.
    2. Any alerts follow as text, six integers each: the entity's index in its call, level,
       instant, lower, upper, confirmed.
    """
    heads: list[bytes] = []
    alerts: list[tuple[int, Alert]] = []
    head_sizes = (32 * per_call).tolist()
    for call in np.flatnonzero(ran).tolist():
        reply, size = replies[call], head_sizes[call]
        heads.append(reply[:size])
        if len(reply) > size:
            found = np.fromstring(reply[size:], np.int64, sep=" ").reshape(-1, 6).tolist()
            for index, level, at_us, lower, upper, confirmed in found:
                code = int(entity_codes[int(call_first[call]) + index])
                alert = Alert(names[code], level, at_us, lower, upper, bool(confirmed))
                alerts.append((code, alert))
    flat = np.frombuffer(b"".join(heads), dtype="<f8")
    return flat.astype(np.int64).reshape(-1, 4), alerts


class RedisMeter:
    """Bucket store in Redis shared by several processes. Keys: `<prefix>:{<entity>}:m`
    (string: the entity's state, `_STATE`), `<prefix>:{<entity>}:alerts` (list), plus the
    set `<prefix>:alerted` of entities with alerts.

    A batch is one round trip (`add`):
    1. Entities are grouped by the Redis Cluster slot of their hash tag; each group is one
       EVALSHA of `_ADD_SCRIPT`, which updates its entities one after the other (a call
       touches one slot, as Redis Cluster requires).
    2. A call's numbers (terms, then per entity its latest instant, row count and
       bucket/posts pairs) are one binary argument of doubles written by NumPy; keys and
       headers are joined with Arrow, and the whole batch is assembled by one `take` and
       sent as one buffer. The replies (one string per call: 4 doubles per entity, then
       any alerts as text) are read in order on the same connection and parsed at once.
    3. Per entity the script reads the state with one GET, unpacks only the pairs that may
       leave the window and the last one (all of them when a row falls between those),
       computes the bounds and alerts after every (entity, bucket) row like `MemoryMeter`,
       and writes the state back with one SET (untouched pairs are copied as bytes).
    """

    def __init__(self, terms: Terms, bucket_us: int, url: str, prefix: str) -> None:
        import redis

        self.terms = terms
        self.bucket_us = bucket_us
        self.span = terms.window_us // bucket_us
        self.prefix = prefix
        self.client = redis.Redis.from_url(url)
        self.sha = str(self.client.script_load(_ADD_SCRIPT))
        # Hash slot per entity code (-1: not computed yet); codes are the meter's registry.
        self._slot = np.full(0, -1, dtype=np.int64)

    def _keys(self, entity: str) -> list[str]:
        tag = hash_tags(pa.array([entity], pa.string()))[0].as_py()
        base = f"{self.prefix}:{{{tag}}}"
        return [f"{base}:m", f"{base}:alerts"]

    def _slots(self, codes: I64, tags: pa.Array) -> I64:
        """The cluster slot of each entity (`codes[i]`, hash tag `tags[i]`), cached by code."""
        top = int(codes.max()) + 1
        if top > len(self._slot):
            grown = np.full(max(top, 2 * len(self._slot), 1024), -1, dtype=np.int64)
            grown[: len(self._slot)] = self._slot
            self._slot = grown
        slots = self._slot[codes]
        todo = np.flatnonzero(slots < 0)
        if len(todo):
            raw = tags.take(pa.array(todo)).cast(pa.binary()).to_pylist()
            slots[todo] = np.array(list(map(binascii.crc_hqx, raw, repeat(0))), np.int64) % _SLOTS
            self._slot[codes[todo]] = slots[todo]
        return slots

    def _send(self, buffer: bytes | memoryview, count: int) -> list[Any]:
        """Send encoded commands on one connection; `count` replies (or errors) in order."""
        import redis

        pool = self.client.connection_pool
        conn = pool.get_connection()
        replies: list[Any] = []
        try:
            conn.send_packed_command([buffer], check_health=True)  # type: ignore[no-untyped-call]
            for _ in range(count):
                try:
                    replies.append(conn.read_response())
                except redis.exceptions.ResponseError as exc:
                    replies.append(exc)
        except BaseException:
            conn.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            pool.release(conn)
        return replies

    def _encode(
        self, names: Sequence[str], codes: I64, buckets: I64, posts: I64, latest: I64
    ) -> tuple[memoryview, I64, I64]:
        """The EVALSHA commands of one batch as one buffer (class doc, step 2).

        1. The batch's entities are grouped into calls, one per cluster slot (`_calls`).
        2. Each call's numbers are one blob of doubles (`_call_numbers`).
        3. Per call, its header, its entities' keys, the blob and the alert levels are
           joined into RESP and the calls into one buffer (`_commands`).

        Returns the buffer, the entities (indexes of their first rows' runs, in the order
        the calls name them) and the first entity of each call in that order.
        """
        calls = self._calls(names, codes)
        blobs = self._call_numbers(calls, buckets, posts, latest)
        return self._commands(calls, blobs), calls.order, calls.call_first

    def _calls(self, names: Sequence[str], codes: I64) -> _Calls:
        """The batch's entities (runs of equal codes) grouped by cluster slot (`_Calls`);
        entities keep their batch order within a call."""
        starts = run_starts(codes)
        rows = np.diff(np.r_[starts, len(codes)])
        entity_codes = codes[starts]
        tags = hash_tags(pa.array(list(map(names.__getitem__, entity_codes.tolist())), pa.string()))
        slots = self._slots(entity_codes, tags)
        order = np.argsort(slots, kind="stable")
        slot_in_order = slots[order]
        call_first = run_starts(slot_in_order)
        per_call = np.diff(np.r_[call_first, len(order)])
        call_of = np.repeat(np.arange(len(call_first)), per_call)
        return _Calls(starts, rows, tags, order, call_first, per_call, call_of)

    def _call_numbers(self, calls: _Calls, buckets: I64, posts: I64, latest: I64) -> pa.Array:
        """Each call's numbers as one binary value of little-endian doubles (exact below
        2**53): span, threshold, bucket_us and cap, then per entity in call order its
        latest instant, its row count n and its n (bucket, posts) pairs."""
        order, call_first = calls.order, calls.call_first
        width = 2 + 2 * calls.rows[order]
        terms = self._script_terms()
        # Where each entity's numbers start: after its call's terms and the earlier entities.
        at = np.cumsum(width) - width + len(terms) * (calls.call_of + 1)
        total = int(at[-1] + width[-1])
        numbers = np.empty(total, dtype="<f8")
        call_at = at[call_first] - len(terms)
        for i, value in enumerate(terms):
            numbers[call_at + i] = value
        numbers[at] = latest[calls.starts[order]]
        numbers[at + 1] = calls.rows[order]
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        entity_of_row = np.repeat(np.arange(len(calls.starts)), calls.rows)
        offset_in_entity = np.arange(len(buckets)) - calls.starts[entity_of_row]
        dest = at[rank[entity_of_row]] + 2 + 2 * offset_in_entity
        numbers[dest] = buckets
        numbers[dest + 1] = posts
        return pa.LargeBinaryArray.from_buffers(
            pa.large_binary(),
            len(call_first),
            [None, pa.py_buffer(8 * np.r_[call_at, total]), pa.py_buffer(numbers)],
        )

    def _commands(self, calls: _Calls, blobs: pa.Array) -> memoryview:
        """The calls as RESP commands in one buffer: per call, `EVALSHA sha numkeys`, its
        entities' two keys each, the blob of numbers (ARGV[1]) and the alert levels
        (ARGV[2], the same for every call)."""
        per_call = calls.per_call
        base = pa.scalar(f"{self.prefix}:{{")
        key_m = _bulk_strings(pc.binary_join_element_wise(base, calls.tags, pa.scalar("}:m"), ""))
        key_a = _bulk_strings(
            pc.binary_join_element_wise(base, calls.tags, pa.scalar("}:alerts"), "")
        )
        keys = _bulk_join(key_m, key_a).take(pa.array(calls.order))
        nkeys = pa.array(2 * per_call).cast(pa.string())
        head = _bulk_join(
            "*",
            pa.array(2 * per_call + 5).cast(pa.string()),
            f"\r\n$7\r\nEVALSHA\r\n${len(self.sha)}\r\n{self.sha}\r\n$",
            pc.binary_length(nkeys).cast(pa.string()),
            "\r\n",
            nkeys,
            "\r\n",
        )
        blob_len = _bulk_join("$", pc.binary_length(blobs).cast(pa.string()), "\r\n")
        levels = pa.array([_LEVELS_TAIL], pa.large_binary())
        pieces = pa.concat_arrays([head, keys, blob_len, blobs, levels])
        _, buffer = binary_parts(pieces.take(pa.array(_piece_order(calls))))
        return buffer

    def _script_terms(self) -> tuple[int, int, int, int]:
        """The terms every call's numbers start with: span, threshold, bucket_us, cap."""
        return self.span, self.terms.threshold, self.bucket_us, bucket_cap(self.span)

    def _run(
        self, names: Sequence[str], codes: I64, buckets: I64, posts: I64, latest: I64
    ) -> tuple[I64, I64, list[tuple[int, Alert]]]:
        """Run one batch: per entity (any order) its code and reply row (lower, upper,
        latest, counted), and the raised alerts with their entity codes."""
        import redis

        buffer, order, call_first = self._encode(names, codes, buckets, posts, latest)
        replies = self._send(buffer, len(call_first))
        errors = [
            r
            for r in replies
            if isinstance(r, Exception) and not isinstance(r, redis.exceptions.NoScriptError)
        ]
        if errors:
            raise errors[0]
        starts = run_starts(codes)
        entity_codes = codes[starts][order]  # call order
        per_call = np.diff(np.r_[call_first, len(entity_codes)])
        ran = np.array([not isinstance(r, Exception) for r in replies])
        rows, alerts = _parse_replies(names, replies, ran, entity_codes, call_first, per_call)
        done = entity_codes[np.repeat(ran, per_call)]
        if not ran.all():
            # The server lost its scripts (restart, SCRIPT FLUSH): load the script again and
            # run the entities of the calls that did not run.
            self.sha = str(self.client.script_load(_ADD_SCRIPT))
            lost = np.isin(codes, entity_codes[np.repeat(~ran, per_call)])
            more = self._run(names, codes[lost], buckets[lost], posts[lost], latest[lost])
            done = np.r_[done, more[0]]
            rows = np.concatenate([rows, more[1]])
            alerts += more[2]
        return done, rows, alerts

    def add(
        self, names: Sequence[str], codes: I64, buckets: I64, posts: I64, latest: I64
    ) -> tuple[Sequence[Bounds], list[Alert]]:
        """Add per-(entity, bucket) sums (see `MeterBackend`) in one round trip; bounds and
        alerts are evaluated after every row, as in `MemoryMeter`, and come back in entity
        code order like its results."""
        if len(codes) == 0:
            return [], []
        done, rows, alerts = self._run(names, codes, buckets, posts, latest)
        by_code = np.argsort(done, kind="stable")
        done, rows = done[by_code], rows[by_code]
        counted = rows[:, 3] == 1
        alerts.sort(key=lambda ca: ca[0])  # stable: an entity's alerts stay in order
        raised = [a for _, a in alerts]
        if raised:
            self.client.sadd(f"{self.prefix}:alerted", *sorted({a.entity for a in raised}))
        out = BatchBounds(
            names,
            done[counted],
            np.ascontiguousarray(rows[counted, 2]),
            np.ascontiguousarray(rows[counted, 0]),
            np.ascontiguousarray(rows[counted, 1]),
        )
        return out, raised

    def _alerts_of(self, entity: str) -> list[Alert]:
        out = []
        for raw in self.client.lrange(self._keys(entity)[1], 0, -1):
            item = json.loads(raw)
            out.append(
                Alert(
                    entity,
                    int(item["level"]),
                    int(item["at_us"]),
                    int(item["lower"]),
                    int(item["upper"]),
                    bool(item["confirmed"]),
                )
            )
        return out

    def bounds(self, entity: str) -> Bounds | None:
        raw = cast(bytes | None, self.client.get(self._keys(entity)[0]))
        if raw is None:
            return None
        top, total, latest, _, _, n = _STATE.unpack_from(raw)
        pairs = np.frombuffer(raw, dtype="<f8", count=2 * int(n), offset=_STATE.size)
        hit = pairs[1::2][pairs[0::2] == top - self.span]
        oldest = float(hit[0]) if len(hit) else 0.0
        return Bounds(entity, int(latest), int(total - oldest), int(total))

    def alerts(self) -> list[Alert]:
        members: set[bytes] = self.client.smembers(f"{self.prefix}:alerted")  # type: ignore[assignment]
        names = sorted(m.decode() for m in members)
        return [alert for name in names for alert in self._alerts_of(name)]

    def clear(self) -> None:
        """Delete every key under this meter's prefix (tests, re-runs)."""
        for key in self.client.scan_iter(match=f"{self.prefix}:*", count=1000):
            self.client.delete(key)
