"""Randomization of a trial's participants to its arms: simple, permuted blocks, stratified blocks.

``simple`` draws every participant's arm independently with probabilities ``ratio / sum(ratio)``;
``block`` allocates permuted blocks of ``block_size`` in enrolment order, each holding every arm
``ratio x block_size / sum(ratio)`` times, so the ratio is exact in every complete block; ``stratified``
does the same within each stratum (the combination of the categorical covariates and formula
strata), so no stratum is ever out of balance by more than half a block.

Randomness comes from a counter-based generator (SplitMix64 of ``seed``, the replicate, the stratum,
the block and the slot): every replicate is randomized independently and deterministically from
``(seed, replicate)`` whatever else is in the table, and the whole table (all replicates at once) is
randomized with array operations. The first ``n'`` participants of a replicate by enrolment order
form a valid smaller trial.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from twinloop.errors import InputError
from twinloop.trials.context import SpecContext

KINDS = ("simple", "block", "stratified")
KEYS = {"simple": {"kind", "ratio"}, "block": {"kind", "ratio", "block_size"}}
KEYS["stratified"] = KEYS["block"] | {"strata"}
MAX_RATIO = 100
MAX_BLOCK = 1000
MAX_LEVELS = 20
MAX_STRATA = 10_000
MAX_COUNTED = 16
"""Up to this many strata, ranks within strata are running counts; beyond, a sort."""
"""The most distinct values a covariate stratum may take (more: it is continuous, use a formula)."""
_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def check_keys(where: str, raw: Mapping[str, Any], allowed: set[str]) -> None:
    """Refuse keys of ``raw`` outside ``allowed``, naming the path and the accepted keys."""
    unknown = sorted(str(k) for k in set(raw) - allowed)
    if unknown:
        raise InputError(f"{where} has unknown keys {unknown}; accepted: {sorted(allowed)}.")


def whole(where: str, value: Any, minimum: int, maximum: int) -> int:
    """``value`` as an int in ``[minimum, maximum]`` (no bools, no fractions)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or int(value) != value:
        raise InputError(f"{where} must be a whole number from {minimum} to {maximum}; got {value!r}.")
    if not minimum <= value <= maximum:
        raise InputError(f"{where} is {value!r}; it must be from {minimum} to {maximum}.")
    return int(value)


@dataclass(frozen=True)
class Stratum:
    """One stratification factor: a categorical covariate (``formula`` None) or a named formula."""

    name: str
    formula: str | None = None

    def levels(self, where: str, table: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """Each row's level index of this factor, and the levels' labels (``name=value``, ``name=yes|no``)."""
        if self.formula is not None:
            from twinloop.cohort.expressions import Formula

            formula = Formula(self.formula, where)
            hit = np.asarray(formula({c: table[c].to_numpy() for c in formula.names if c in table}), dtype=bool)
            return np.broadcast_to(hit, (len(table),)).astype(np.int64), [f"{self.name}=no", f"{self.name}=yes"]
        if self.name not in table:
            raise InputError(f"{where}: the covariate '{self.name}' is not a column of the participants table.")
        codes, uniques = pd.factorize(table[self.name], use_na_sentinel=False)
        if pd.api.types.is_numeric_dtype(table[self.name]) and len(uniques) > MAX_LEVELS:
            raise InputError(
                f"{where}: the covariate '{self.name}' takes {len(uniques)} values (continuous); stratify on "
                f"a categorical covariate or on a formula such as {{name: high_{self.name}, formula: "
                f'"{self.name} >= 65"}}.'
            )
        return codes.astype(np.int64), [f"{self.name}={u}" for u in uniques]

    def to_dict(self) -> str | dict[str, str]:
        return self.name if self.formula is None else {"name": self.name, "formula": self.formula}


@dataclass(frozen=True)
class Randomization:
    """The validated ``randomization`` section (see the module docstring)."""

    kind: str = "simple"
    ratio: Mapping[str, int] = field(default_factory=dict)
    block_size: int | None = None
    strata: tuple[Stratum, ...] = ()
    where: str = field(default="randomization", compare=False)

    @classmethod
    def parse(cls, where: str, raw: Any, ctx: SpecContext) -> Randomization:
        """Validate ``raw`` (the section at ``where``) against the arms and covariates of ``ctx``."""
        raw = {} if raw is None else raw
        if not isinstance(raw, Mapping):
            raise InputError(f"{where} must be a mapping such as {{kind: block, block_size: 4}}; got {raw!r}.")
        kind = raw.get("kind", "simple")
        if kind not in KINDS:
            raise InputError(f"{where}.kind must be one of {', '.join(KINDS)}; got {kind!r}.")
        if "strata" in raw and kind != "stratified":
            raise InputError(f"{where}.strata needs kind stratified (got kind {kind}); set kind: stratified.")
        check_keys(where, raw, KEYS[kind])
        ratio = _ratio(f"{where}.ratio", raw.get("ratio"), ctx.arms)
        total = sum(ratio.values())
        block = None
        if kind != "simple":
            block = whole(f"{where}.block_size", raw.get("block_size", 2 * total), total, MAX_BLOCK)
            if block % total:
                raise InputError(
                    f"{where}.block_size is {block}; it must be a multiple of the ratio's sum {total} "
                    f"(e.g. {total} or {2 * total})."
                )
        strata = _strata(f"{where}.strata", raw.get("strata"), ctx) if kind == "stratified" else ()
        return cls(kind, ratio, block, strata, where)

    def to_dict(self) -> dict[str, Any]:
        """The section as plain data; ``parse`` of it gives an equal object."""
        out: dict[str, Any] = {"kind": self.kind, "ratio": dict(self.ratio)}
        if self.block_size is not None:
            out["block_size"] = self.block_size
        if self.strata:
            out["strata"] = [s.to_dict() for s in self.strata]
        return out

    def strata_labels(self, table: pd.DataFrame) -> np.ndarray:
        """Each row's stratum as text (its factors' levels joined by ``;``), ``""`` when not stratified."""
        index, labels = self._strata(table)
        return np.asarray(labels, dtype=object)[index]

    def assign(self, table: pd.DataFrame, arms: Sequence[str], seed: int) -> np.ndarray:
        """Each row's arm (object array, in the rows' order); ``table`` has ``replicate`` and ``order``."""
        weights = self._weights(arms)
        rep = table["replicate"].to_numpy(dtype=np.int64)
        order = table["order"].to_numpy(dtype=np.int64)
        names = np.asarray(list(arms), dtype=object)
        if self.kind == "simple":
            u = _uniform(_hash(seed, _enrolment(rep, order)[0]))
            cut = np.cumsum(weights) / weights.sum()
            return names[np.minimum(np.searchsorted(cut, u, side="right"), len(arms) - 1)]
        index, labels = self._strata(table)
        present = np.flatnonzero(np.bincount(index, minlength=len(labels)))
        codes = np.zeros(len(labels), dtype=np.uint64)
        codes[present] = [_stable_code(labels[i]) for i in present]
        return names[_blocks(rep, index, codes, order, weights, int(self.block_size or 0), seed)]

    def _strata(self, table: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """Each row's stratum index into the labels of every combination of the factors' levels."""
        index = np.zeros(len(table), dtype=np.int64)
        labels = [""]
        for i, stratum in enumerate(self.strata):
            codes, levels = stratum.levels(f"{self.where}.strata[{i}]", table)
            if len(labels) * len(levels) > MAX_STRATA:
                raise InputError(
                    f"{self.where}.strata make more than {MAX_STRATA} strata; stratify on fewer or coarser factors."
                )
            index = index * len(levels) + codes
            labels = [f"{a};{b}" if a else b for a in labels for b in levels]
        return index, labels

    def _weights(self, arms: Sequence[str]) -> np.ndarray:
        if sorted(arms) != sorted(self.ratio):
            raise InputError(
                f"{self.where}.ratio names the arms {sorted(self.ratio)}, but the trial has {sorted(arms)}; "
                "name every arm once."
            )
        return np.array([self.ratio[a] for a in arms], dtype=np.int64)


def _ratio(where: str, raw: Any, arms: Sequence[str]) -> dict[str, int]:
    if raw is None:
        return dict.fromkeys(arms, 1)
    if not isinstance(raw, Mapping):
        raise InputError(f"{where} must map every arm to a positive whole number, e.g. {dict.fromkeys(arms, 1)}.")
    unknown = sorted(str(k) for k in raw if k not in arms)
    if unknown:
        raise InputError(f"{where} names unknown arms {unknown}; the arms are {list(arms)}.")
    missing = [a for a in arms if a not in raw]
    if missing:
        raise InputError(f"{where} lacks the arms {missing}; give every arm a positive whole number.")
    return {a: whole(f"{where}.{a}", raw[a], 1, MAX_RATIO) for a in arms}


def _strata(where: str, raw: Any, ctx: SpecContext) -> tuple[Stratum, ...]:
    if not isinstance(raw, list) or not raw:
        raise InputError(
            f"{where} must be a non-empty list of covariate names or {{name, formula}} mappings "
            f"(kind stratified); got {raw!r}. Use kind block for no strata."
        )
    out: list[Stratum] = []
    for i, item in enumerate(raw):
        out.append(_stratum(f"{where}[{i}]", item, ctx))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise InputError(f"{where} names a stratum twice ({names}); give each stratum its own name.")
    return tuple(out)


def _stratum(where: str, item: Any, ctx: SpecContext) -> Stratum:
    if isinstance(item, str):
        if item not in ctx.covariates:
            raise InputError(
                f"{where} is {item!r}, not a covariate; use one of {list(ctx.covariates)} or "
                f"{{name: label, formula: 'age >= 65'}}."
            )
        return Stratum(item)
    if not isinstance(item, Mapping):
        raise InputError(f"{where} must be a covariate name or {{name: label, formula: 'age >= 65'}}; got {item!r}.")
    check_keys(where, item, {"name", "formula"})
    name, text = item.get("name"), item.get("formula")
    if not isinstance(name, str) or not name.isidentifier():
        raise InputError(f"{where}.name must be a label such as elderly; got {name!r}.")
    if not isinstance(text, str):
        raise InputError(f"{where}.formula must be a boolean formula such as 'age >= 65'; got {text!r}.")
    from twinloop.cohort.expressions import Formula

    unknown = sorted(Formula(text, f"{where}.formula").names - set(ctx.columns))
    if unknown:
        raise InputError(
            f"{where}.formula {text!r} uses {unknown}, which are not covariates or baseline measures "
            f"({list(ctx.columns)})."
        )
    return Stratum(name, text)


def _stable_code(label: str) -> int:
    """A 64-bit code of a stratum's label, the same in any table (hashes are keyed by it)."""
    return int.from_bytes(hashlib.blake2b(label.encode(), digest_size=8).digest(), "little")


GAMMA = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer, in place over a uint64 array (arithmetic wraps modulo 2**64)."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _stream(state: np.ndarray, counter: np.ndarray) -> np.ndarray:
    """The ``counter``-th output of the SplitMix64 streams started at ``state`` (broadcast together)."""
    x = np.asarray(counter).astype(np.uint64) + np.uint64(1)
    x *= GAMMA
    x += state
    return _mix(x)


def _hash(seed: int, *keys: np.ndarray) -> np.ndarray:
    """A 64-bit state from ``seed`` and the integer ``keys`` (broadcast together), one mix per key."""
    h = _mix(np.array([seed % 2**64], dtype=np.uint64))
    for key in keys:
        h = _stream(h, key)
    return h


def _uniform(h: np.ndarray) -> np.ndarray:
    """Uniform numbers in [0, 1) from hashes (their top 53 bits)."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def _enrolment(rep: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Each row's key ``replicate * 2**32 + order``, and the permutation that sorts rows by it (None
    when they are already sorted)."""
    low = min(rep.min(initial=0), order.min(initial=0))
    if low < 0 or rep.max(initial=0) >= 2**31 or order.max(initial=0) >= 2**32:
        raise InputError("randomization: 'replicate' and 'order' must be whole numbers >= 0 (below 2**31).")
    key = (rep << 32) | order
    if np.all(key[1:] > key[:-1]):
        return key, None
    if np.unique(key).size != key.size:
        raise InputError("randomization: two participants share a replicate and an enrolment order.")
    return key, np.argsort(key)


def _blocks(
    rep: np.ndarray,
    stratum: np.ndarray,
    codes: np.ndarray,
    order: np.ndarray,
    weights: np.ndarray,
    size: int,
    seed: int,
) -> np.ndarray:
    """Arm indices by permuted blocks of ``size`` within each (replicate, stratum), in enrolment order.

    ``stratum`` holds small stratum indices, ``codes`` each index's stable 64-bit code (hashed)."""
    sort = _enrolment(rep, order)[1]
    r, s = (rep, stratum) if sort is None else (rep[sort], stratum[sort])
    present = np.flatnonzero(np.bincount(s, minlength=codes.size))
    if present.size > 1:  # number the strata present 0..P-1
        s = np.cumsum(np.bincount(s, minlength=codes.size) > 0)[s] - 1
    new = np.ones(r.size, dtype=bool)
    new[1:] = r[1:] != r[:-1]
    rep_start = np.flatnonzero(new)
    rep_count = np.diff(np.append(rep_start, r.size))
    group = np.repeat(np.arange(rep_start.size) * present.size, rep_count) + (s if present.size > 1 else 0)
    rank = _ranks(s, present.size, rep_start, rep_count)
    counts = np.bincount(group, minlength=rep_start.size * present.size)
    nblocks = -(-counts // size)
    first_block = np.cumsum(nblocks) - nblocks
    group_hash = _hash(seed, np.repeat(r[rep_start], present.size), np.tile(codes[present], rep_start.size))
    arms = _permuted_blocks(group_hash, nblocks, weights, size)
    # participant i of a group (by enrolment order) takes slot i of the group's run of blocks
    slot = first_block[group] * size + rank
    if sort is None:
        return arms[slot]
    out = np.empty(r.size, dtype=np.int64)
    out[sort] = arms[slot]
    return out


def _ranks(stratum: np.ndarray, strata: int, rep_start: np.ndarray, rep_count: np.ndarray) -> np.ndarray:
    """Each row's rank among its replicate's rows of the same stratum (rows in enrolment order)."""
    if strata == 1:
        return np.arange(stratum.size) - np.repeat(rep_start, rep_count)
    if strata > MAX_COUNTED:  # many strata: sort the rows by (replicate, stratum) instead
        by = np.repeat(np.arange(rep_start.size) * strata, rep_count) + stratum
        sort = np.argsort(by, kind="stable")
        new = np.ones(by.size, dtype=bool)
        new[1:] = by[sort][1:] != by[sort][:-1]
        starts = np.flatnonzero(new)
        rank = np.empty(by.size, dtype=np.int64)
        rank[sort] = np.arange(by.size) - np.repeat(starts, np.diff(np.append(starts, by.size)))
        return rank
    rank = np.zeros(stratum.size, dtype=np.int64)
    for k in range(strata):
        hit = stratum == k
        seen = np.cumsum(hit, dtype=np.int64)
        seen -= np.repeat(seen[rep_start] - hit[rep_start], rep_count)  # the stratum's rows before the replicate
        seen *= hit
        rank += seen
    rank -= 1
    return rank


def _permuted_blocks(group_hash: np.ndarray, nblocks: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """The arm of every slot of every group's blocks (flat), each block a random permutation of the
    ratio's template (a Fisher-Yates shuffle of all blocks at once, keyed by group, block and slot)."""
    block_group = np.repeat(np.arange(group_hash.size), nblocks)
    block_index = np.arange(block_group.size) - np.repeat(np.cumsum(nblocks) - nblocks, nblocks)
    state = group_hash[block_group]
    template = np.repeat(np.arange(weights.size), weights * (size // int(weights.sum())))
    blocks = np.tile(template.astype(np.int64), (block_group.size, 1))
    rows = np.arange(block_group.size)
    for i in range(size - 1, 0, -1):
        u = _uniform(_stream(state, block_index * size + i))
        j = np.minimum((u * (i + 1)).astype(np.int64), i)
        chosen = blocks[rows, j]
        blocks[rows, j] = blocks[:, i]
        blocks[:, i] = chosen
    return blocks.reshape(-1)
