"""Imported SBML models against libroadrunner, the field's reference simulator: relative
error <= 1e-6 at every output time (floor near zero: see ``tests/sbml_reference.py``).
A fast subset runs by default (one model with events); the full set is marked slow."""

from __future__ import annotations

import pytest

pytest.importorskip("roadrunner")

import sbml_reference as ref

SLOW = [name for name in ref.CASES if name not in ref.FAST and name not in ref.UNCHECKED]


@pytest.mark.parametrize("name", ref.FAST)
def test_fast_subset_matches_libroadrunner(name):
    row = ref.compare(name)
    assert row["max_rel_error"] <= 1e-6, row


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_curated_model_matches_libroadrunner(name):
    row = ref.compare(name)
    assert row["max_rel_error"] <= 1e-6, row


def test_the_fast_subset_has_events_and_the_full_set_rules_and_a_disease_model():
    every = {name: ref.features(ref.DATA / ref.CASES[name].file) for name in ref.CASES}
    assert any(every[n]["events"] for n in ref.FAST)
    checked = [n for n in ref.CASES if n not in ref.UNCHECKED]
    assert len(checked) >= 10
    assert all(any(every[n][k] for n in checked) for k in ("events", "assignment_rules", "rate_rules"))
