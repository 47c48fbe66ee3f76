"""What a state found on the broker is: this database's own, another's, or no state at all."""

from __future__ import annotations

import json

import pytest

from gateway.sinks.payloads import (
    Conflict,
    DatabaseIdentity,
    Malformed,
    OwnState,
    judge_retained_state,
    signed_state,
)

US = DatabaseIdentity("0" * 32, "11" * 32)
THEM = DatabaseIdentity("f" * 32, "22" * 32)
STATE = {"time": "2026-12-01T00:00:00Z", "energy_wh": 120_990, "energy_time": None}


def text(payload: dict) -> str:
    return json.dumps(payload)


def test_a_state_this_database_signed_is_its_own() -> None:
    signed = signed_state({**STATE, "energy_time": "2026-12-01T00:00:00Z"}, "unit-101", US)
    assert signed["database_id"] == US.database_id and len(signed["signature"]) == 32
    assert judge_retained_state(text(signed), "unit-101", US) == OwnState(
        120_990, "2026-12-01T00:00:00Z"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"energy_wh": 999_999_999_999},  # another number under our id
        {"energy_time": "2026-12-02T00:00:00Z"},  # another time
        {"signature": None},
        {"signature": "0" * 32},
    ],
)
def test_a_forged_copy_of_our_state_is_a_conflict(change: dict) -> None:
    forged = {**signed_state(STATE, "unit-101", US), **change}
    verdict = judge_retained_state(text(forged), "unit-101", US)
    assert isinstance(verdict, Conflict) and "not signed by it" in verdict.detail


def test_our_state_on_another_meters_topic_is_not_that_meters() -> None:
    ours = signed_state(STATE, "unit-101", US)
    assert isinstance(judge_retained_state(text(ours), "unit-102", US), Conflict)


def test_another_databases_state_is_a_conflict_naming_it() -> None:
    theirs = signed_state(STATE, "unit-101", THEM)
    assert judge_retained_state(text(theirs), "unit-101", US) == Conflict(
        THEM.database_id, f"a state of another database ({THEM.database_id})"
    )
    no_id = judge_retained_state(text(STATE), "unit-101", US)
    assert isinstance(no_id, Conflict) and no_id.database_id is None


@pytest.mark.parametrize(
    "payload",
    [
        '{"energy_wh": 1e400}',
        '{"energy_wh": 12.0}',
        '{"energy_wh": true}',
        '{"energy_wh": -5}',
        '{"energy_wh": 1000000000000}',  # beyond nine LCD digits of kWh
        '{"energy_wh": "12"}',
        '{"power_kw": 1}',
        "[]",
        "",
        "not json",
        "[" * 100_000,
        '{"energy_wh": 12, "database_id": 7}',
        '{"energy_wh": 12, "database_id": "../etc"}',
        '{"energy_wh": 12, "pad": "' + "x" * 5000 + '"}',
    ],
)
def test_a_malformed_or_absurd_state_is_no_state(payload: str) -> None:
    assert isinstance(judge_retained_state(payload, "unit-101", US), Malformed)
