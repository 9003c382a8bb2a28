"""The schedule rules without any server: cron parsing, slots in a time zone with daylight
saving, the CronJob-like decision (catch-up, deadline, concurrency, suspend), run names and
history pruning, and the CRD's apply-time patterns agreeing with the parser."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from exportd.contract.cron import Cron, CronError, Timetable
from exportd.contract.schedule import (
    ConcurrencyPolicy,
    Outcome,
    RunRecord,
    ScheduleRules,
    ScheduleSpec,
    decide,
    history_to_prune,
    run_name,
)
from exportd.contract.spec import Phase

CRD = Path(__file__).resolve().parents[2] / "crds" / "exportschedule.yaml"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def rules(cron: str, **extra: object) -> ScheduleRules:
    return ScheduleRules.model_validate({"schedule": cron, **extra})


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        ("*/15 * * * *", utc(2026, 1, 1, 10, 7), utc(2026, 1, 1, 10, 15)),
        ("0 7 * * MON", utc(2026, 12, 4, 12, 0), utc(2026, 12, 7, 7, 0)),  # a Friday
        ("0 0 1 JAN *", utc(2026, 3, 1), utc(2027, 1, 1)),
        ("@hourly", utc(2026, 1, 1, 10, 0), utc(2026, 1, 1, 11, 0)),
        ("0 12 13 * 5", utc(2026, 2, 1), utc(2026, 2, 6, 12)),  # both days given: either one
        ("0 0 * * 7", utc(2026, 12, 4), utc(2026, 12, 6)),  # 7 is Sunday
        ("0 0 29 2 *", utc(2026, 3, 1), utc(2028, 2, 29)),
        ("5-10/5 1 * * *", utc(2026, 1, 1, 1, 6), utc(2026, 1, 1, 1, 10)),
    ],
)
def test_next_slot_follows_vixie_cron(expression: str, start: datetime, expected: datetime) -> None:
    """The first slot after a moment, for lists, steps, names, macros and both day fields."""
    assert Timetable.of(expression, "UTC").next_after(start) == expected


@pytest.mark.parametrize(
    ("expression", "field"),
    [
        ("60 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day of month"),
        ("* * * 13 *", "month"),
        ("* * * * FRI-MON", "day of week"),
        ("*/0 * * * *", "minute"),
        ("* * * *", "5 fields"),
        ("@fortnightly", "5 fields"),
    ],
)
def test_bad_expressions_are_refused_naming_the_part(expression: str, field: str) -> None:
    with pytest.raises(CronError, match=field):
        Cron.parse(expression)


def test_a_cron_that_never_fires_has_no_next_slot() -> None:
    assert Timetable.of("0 0 30 2 *", "UTC").next_after(utc(2026, 1, 1)) is None


def test_spring_forward_runs_a_missing_local_time_once_shifted_by_the_gap() -> None:
    """02:30 does not exist in Berlin on 2026-03-29 (02:00 CET -> 03:00 CEST): the slot runs
    once, at 03:30 CEST (01:30 UTC), the documented time; the days around run at 02:30."""
    table = Timetable.of("30 2 * * *", "Europe/Berlin")
    slots = table.slots_between(utc(2026, 3, 27, 12), utc(2026, 3, 31))
    assert slots == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)]


def test_spring_forward_merges_a_shifted_slot_with_the_real_one() -> None:
    """With both 02:30 and 03:30 in the schedule, the shifted 02:30 and 03:30 are one instant:
    one run."""
    table = Timetable.of("30 2,3 * * *", "Europe/Berlin")
    assert table.slots_between(utc(2026, 3, 28, 23), utc(2026, 3, 29, 4)) == [
        utc(2026, 3, 29, 1, 30)
    ]


def test_fall_back_runs_a_repeated_local_time_once_at_its_first_occurrence() -> None:
    """01:30 happens twice in New York on 2026-11-01 (EDT, then EST): one run, at 01:30 EDT."""
    table = Timetable.of("30 1 * * *", "America/New_York")
    slots = table.slots_between(utc(2026, 10, 31, 12), utc(2026, 11, 2, 12))
    assert slots == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
    # Asked from between the two 01:30s, the next slot is the next day's.
    assert table.next_after(utc(2026, 11, 1, 6, 0)) == utc(2026, 11, 2, 6, 30)


def test_a_new_schedule_waits_for_its_first_slot() -> None:
    decision = decide(
        rules("0 * * * *"), since=utc(2026, 1, 1, 10, 5), now=utc(2026, 1, 1, 10, 50), active=0
    )
    assert decision.action == "none"
    assert decision.next_slot == utc(2026, 1, 1, 11)


def test_after_downtime_only_the_latest_slot_runs_and_the_others_count_as_missed() -> None:
    """Down from 10:00 to 13:10 with an hourly schedule: one catch-up run (13:00), two missed."""
    decision = decide(
        rules("0 * * * *"), since=utc(2026, 1, 1, 10), now=utc(2026, 1, 1, 13, 10), active=0
    )
    assert (decision.action, decision.slot, decision.missed) == ("run", utc(2026, 1, 1, 13), 2)
    assert decision.handled == utc(2026, 1, 1, 13)


def test_a_slot_later_than_the_starting_deadline_is_missed() -> None:
    late = rules("0 * * * *", startingDeadlineSeconds=300)
    decision = decide(late, since=utc(2026, 1, 1, 10), now=utc(2026, 1, 1, 11, 6), active=0)
    assert (decision.action, decision.slot, decision.missed) == ("miss", utc(2026, 1, 1, 11), 1)
    in_time = decide(late, since=utc(2026, 1, 1, 10), now=utc(2026, 1, 1, 11, 4), active=0)
    assert in_time.action == "run"


@pytest.mark.parametrize(
    ("policy", "action", "replace"),
    [("Allow", "run", False), ("Forbid", "skip", False), ("Replace", "run", True)],
)
def test_concurrency_policy_with_a_run_still_active(
    policy: str, action: str, replace: bool
) -> None:
    decision = decide(
        rules("0 * * * *", concurrencyPolicy=policy),
        since=utc(2026, 1, 1, 10),
        now=utc(2026, 1, 1, 11, 1),
        active=1,
    )
    assert (decision.action, decision.replace) == (action, replace)
    assert decision.handled == utc(2026, 1, 1, 11)  # a skipped slot does not run later


def test_a_suspended_schedule_handles_nothing_and_catches_up_once_resumed() -> None:
    suspended = rules("0 * * * *", suspend=True)
    assert (
        decide(suspended, since=utc(2026, 1, 1, 10), now=utc(2026, 1, 1, 12, 1), active=0).action
        == "none"
    )
    resumed = rules("0 * * * *")
    decision = decide(resumed, since=utc(2026, 1, 1, 10), now=utc(2026, 1, 1, 12, 1), active=0)
    assert (decision.action, decision.slot) == ("run", utc(2026, 1, 1, 12))


def test_run_names_are_deterministic_dns_labels() -> None:
    slot = utc(2026, 3, 29, 1, 30)
    assert run_name("weekly", slot) == "weekly-202603290130"
    assert (
        run_name("weekly", slot.astimezone(Timetable.of("@daily", "Asia/Tokyo").tz))
        == "weekly-202603290130"
    )
    long = run_name("x" * 80, slot)
    assert len(long) == 63 and long == run_name("x" * 80, slot) != run_name("x" * 81, slot)
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", long)


def test_history_keeps_the_newest_finished_runs_within_the_limits() -> None:
    def run(hour: int, phase: Phase) -> RunRecord:
        return RunRecord(f"r{hour}", utc(2026, 1, 1, hour), phase)

    runs = [
        run(1, Phase.SUCCEEDED),
        run(2, Phase.FAILED),
        run(3, Phase.SUCCEEDED),
        run(4, Phase.CANCELLED),
        run(5, Phase.SUCCEEDED),
        run(6, Phase.RUNNING),
    ]
    assert history_to_prune(runs, successful_limit=2, failed_limit=1) == ["r1", "r2"]
    assert history_to_prune(runs, successful_limit=0, failed_limit=0) == [
        "r1",
        "r2",
        "r3",
        "r4",
        "r5",
    ]


def test_schedule_spec_errors_name_the_field() -> None:
    body = {
        "schedule": "61 * * * *",
        "timeZone": "Mars/Base",
        "template": {"type": "t", "fileName": "a.txt"},
    }
    with pytest.raises(ValidationError) as caught:
        ScheduleSpec.model_validate(body)
    fields = {".".join(str(p) for p in error["loc"]) for error in caught.value.errors()}
    assert fields == {"schedule", "timeZone", "template.fileName"}


def test_concurrency_policies_are_the_crds() -> None:
    crd = yaml.safe_load(CRD.read_text(encoding="utf-8"))
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["concurrencyPolicy"]["enum"] == [p.value for p in ConcurrencyPolicy]


@pytest.mark.parametrize(
    "expression",
    ["*/5 * * * *", "0 7 * * MON", "0 0 1 jan,jul *", "@weekly", "15 2 1-7 * 1-5", "61 * * * *"],
)
def test_the_crd_pattern_lets_through_what_looks_like_cron(expression: str) -> None:
    """The apply-time pattern accepts every well-formed expression (the parser then checks
    ranges; the operator refuses the rest with a condition)."""
    crd = yaml.safe_load(CRD.read_text(encoding="utf-8"))
    fields = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]
    assert re.fullmatch(fields["schedule"]["pattern"], expression)


@pytest.mark.parametrize("expression", ["* * * *", "@fortnightly", "* * * * * *", "0 7 * * MON;rm"])
def test_the_crd_pattern_refuses_malformed_cron_at_apply_time(expression: str) -> None:
    crd = yaml.safe_load(CRD.read_text(encoding="utf-8"))
    fields = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]
    assert not re.fullmatch(fields["schedule"]["pattern"], expression)
    with pytest.raises(CronError):
        Cron.parse(expression)


@pytest.mark.parametrize(
    ("zone", "valid"),
    [
        ("Europe/Berlin", True),
        ("UTC", True),
        ("America/Argentina/Buenos_Aires", True),
        ("../etc/passwd", False),
        ("Europe/Berlin ", False),
    ],
)
def test_the_crd_pattern_for_time_zones(zone: str, valid: bool) -> None:
    crd = yaml.safe_load(CRD.read_text(encoding="utf-8"))
    fields = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]
    assert bool(re.fullmatch(fields["timeZone"]["pattern"], zone)) is valid


def test_slots_are_looked_for_at_most_100_days_back() -> None:
    """A schedule every minute down for a year is not walked minute by minute from the start."""
    table = Timetable.of("* * * * *", "UTC")
    slots = table.slots_between(utc(2025, 1, 1), utc(2026, 1, 1))
    assert slots[0] == utc(2026, 1, 1) - timedelta(days=100) + timedelta(minutes=1)


def test_the_example_schedule_is_valid_for_the_crd_and_the_operator() -> None:
    """deploy/examples' ExportSchedule: its cron and time zone pass the CRD's patterns and the
    operator's parser, and its next slot is Monday 07:00 Berlin time."""
    from exportd.contract.exportschedule import schedule_spec_of

    example = CRD.parents[1] / "deploy" / "examples" / "exportschedule-weekly-menus.yaml"
    body = yaml.safe_load(example.read_text(encoding="utf-8"))
    crd = yaml.safe_load(CRD.read_text(encoding="utf-8"))
    version = crd["spec"]["versions"][0]
    fields = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert body["kind"] == crd["spec"]["names"]["kind"]
    assert body["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
    assert re.fullmatch(fields["schedule"]["pattern"], body["spec"]["schedule"])
    assert re.fullmatch(fields["timeZone"]["pattern"], body["spec"]["timeZone"])
    spec = schedule_spec_of(body)
    assert spec.timetable.next_after(utc(2026, 12, 4)) == utc(2026, 12, 7, 6)


def test_the_crd_fields_are_the_models_fields() -> None:
    """crds/exportschedule.yaml and exportd.contract.exportschedule keep the same spec and template
    fields, and the status has every field the operator writes."""
    from exportd.contract.exportschedule import ExportScheduleSpec, RunTemplate

    crd = yaml.safe_load(CRD.read_text(encoding="utf-8"))
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    spec = schema["spec"]["properties"]

    def aliases(model: type[ExportScheduleSpec] | type[RunTemplate]) -> set[str]:
        return {field.alias or name for name, field in model.model_fields.items()}

    assert set(spec) == aliases(ExportScheduleSpec)
    assert set(spec["template"]["properties"]) == aliases(RunTemplate)
    written = {
        "active", "activeCount", "nextScheduleTime", "lastSuccessfulTime", "lastSlotTime",
        "lastScheduleTime", "lastOutcome", "conditions", "reason", "message",
    }  # fmt: skip
    assert written <= set(schema["status"]["properties"])
    outcomes = schema["status"]["properties"]["lastOutcome"]["enum"]
    assert outcomes == [o.value for o in Outcome]
