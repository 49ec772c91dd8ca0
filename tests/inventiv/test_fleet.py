"""What `inventiv volumes verify` prints: the table a person reads, its summary, and the JSON."""

from __future__ import annotations

import json

from inventiv.fleet import report_json, report_table, summary
from scheduler.volume_check import Checked, Finding, Kind
from scheduler.volume_verify import Report

I1 = "11111111-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
I2 = "22222222-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
V1 = "0f0f0f0f-cccc-4ccc-8ccc-cccccccccccc"


def test_the_table_groups_rows_by_instance_shortens_ids_and_ends_with_the_summary() -> None:
    report = Report(
        findings=[
            Finding(Kind.SIZE, I1, V1, "data size", "200 GB", "300 GB"),
            Finding(Kind.UNCHECKED, None, None, "cloud (mock z)", "reachable", "503 unavailable"),
        ],
        checked=[
            Checked(I1, "srv-1", "server", "exists, 2 volume(s)"),
            Checked(I2, "vol-9", "boot", "20 GB mock_block, attached to srv-2"),
        ],
        instances=2,
        volumes=3,
    )
    assert report_table(report).splitlines() == [
        "INSTANCE  VOLUME    WHAT            EXPECTED                             ACTUAL           VERDICT",
        "11111111  srv-1     server          exists, 2 volume(s)                  as expected      ok",
        "11111111  0f0f0f0f  data size       200 GB                               300 GB           MISMATCH",
        "22222222  vol-9     boot            20 GB mock_block, attached to srv-2  as expected      ok",
        "-         -         cloud (mock z)  reachable                            503 unavailable  UNCHECKED",
        "2 instances, 3 tracked volumes checked: 1 mismatch (1 size); 1 place the cloud could not be asked about",
    ]


def test_the_summary() -> None:
    assert summary(Report(instances=1, volumes=1)) == "1 instance, 1 tracked volume checked: everything matches"
    findings = [Finding(kind, I1, V1, "w", "e", "a") for kind in (Kind.ORPHAN, Kind.SIZE, Kind.ORPHAN)]
    assert summary(Report(findings=findings, instances=0, volumes=0)) == (
        "0 instances, 0 tracked volumes checked: 3 mismatches (2 orphan, 1 size)"
    )


def test_the_json_keeps_whole_ids() -> None:
    report = Report(findings=[Finding(Kind.UNTRACKED, I1, V1, "tracking", "tracked", "attached")], instances=1)
    assert json.loads(report_json(report)) == {
        "ok": False, "instances": 1, "volumes": 0,
        "findings": [{"kind": "untracked", "instance_id": I1, "volume_id": V1, "what": "tracking",
                      "expected": "tracked", "actual": "attached", "verdict": "MISMATCH"}],
    }  # fmt: skip
