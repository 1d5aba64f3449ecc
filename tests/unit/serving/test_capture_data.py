"""
What the capture stores is what monitoring can trust: the model's signature columns in its types (others dropped
and counted), redaction before anything is written, refused requests and synthetic traffic stored apart, only
names the registry allows and only under the root, and a window of mixed types read without an exception.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import pytest

from airflow_mlops.registry import MODEL_NAME_PATTERN as REGISTRY_MODEL_NAME_PATTERN
from airflow_mlops.serving.capture import (
    INVALID,
    MODEL_NAME_PATTERN,
    PREDICTION,
    REQUEST_ID,
    CaptureWriter,
    check_capture_settings,
    count_captures,
    hour_of,
    parquet_bytes,
    read_captures,
    to_records,
    traffic_kind,
)

SIGNATURE = {"tenure_months": "long", "monthly_spend": "double", "customer_id": "string"}
WINDOW = (datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1))


def scoring(*rows: dict) -> bytes:
    return json.dumps({"dataframe_records": list(rows)}).encode()


def stored_bytes(root) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*.parquet"))


def test_only_signature_columns_are_stored_redacted_before_writing_and_drops_counted(tmp_path):
    writer = CaptureWriter(str(tmp_path), signature=SIGNATURE, redact=["customer_id"], flush_seconds=60)
    row = {"tenure_months": 12, "monthly_spend": 80.5, "customer_id": "C-0042", "email": "ann@example.com"}
    writer.submit("churn", "3", "ok-1", 200, scoring(row), b'{"predictions": [1]}')
    refused = {"tenure_months": "ten", "monthly_spend": 1.0, "customer_id": "C-7", "ssn": "123-45-6789"}
    writer.submit("churn", "3", "bad-1", 400, scoring(refused), b'{"error_code": "BAD_REQUEST"}')
    assert writer.flush()
    stats = writer.stats()
    writer.close()

    captured = read_captures(str(tmp_path), "churn", *WINDOW, types=SIGNATURE)
    assert [c for c in captured.columns if not c.startswith("_")] == list(SIGNATURE)
    assert captured[["tenure_months", "monthly_spend", PREDICTION]].to_dict("records") == [
        {"tenure_months": 12, "monthly_spend": 80.5, PREDICTION: 1.0}
    ]
    assert str(captured["tenure_months"].dtype) == "int64"
    raw = stored_bytes(tmp_path)
    for secret in (b"ann@example.com", b"email", b"123-45-6789", b"ssn", b"C-0042"):
        assert secret not in raw
    assert stats["dropped_values"] == 2
    assert stats["dropped_columns"] == {"email": 1, "ssn": 1}
    assert stats["invalid_rows"] == 1  # "ten" is no long
    assert stats["rows_by_traffic"] == {"production": 1, "rejected": 1}


def test_refused_and_synthetic_requests_are_stored_apart_and_never_counted_as_production(tmp_path):
    writer = CaptureWriter(str(tmp_path), signature=SIGNATURE)
    for index in range(200):
        writer.submit("churn", "3", f"real-{index}", 200, scoring({"tenure_months": index}), b"[0]")
    writer.submit("churn", "3", "refused-1", 400, scoring({"tenure_months": 1}), b'{"error_code": "X"}')
    writer.submit("churn", "3", "refused-2", 503, scoring({"tenure_months": 1}), b"down")
    for index in range(5):
        writer.submit("churn", "3", f"smoke-{index}", 200, scoring({"tenure_months": 1}), b"[0]", "smoke")
    writer.submit("churn", "3", "probe", 200, scoring({"tenure_months": 1}), b"[0]", "canary-probe")
    writer.submit("churn", "3", "odd", 200, scoring({"tenure_months": 1}), b"[0]", "load-test")
    writer.close()

    assert count_captures(str(tmp_path), "churn", *WINDOW) == 200
    assert len(read_captures(str(tmp_path), "churn", *WINDOW, types=SIGNATURE)) == 200
    assert count_captures(str(tmp_path), "churn", *WINDOW, traffic="rejected") == 2
    assert count_captures(str(tmp_path), "churn", *WINDOW, traffic="smoke") == 5
    assert count_captures(str(tmp_path), "churn", *WINDOW, traffic="canary-probe") == 1
    assert count_captures(str(tmp_path), "churn", *WINDOW, traffic="synthetic") == 1  # an unknown label
    kinds = sorted(p.name for p in (tmp_path / "captures" / "model=churn").glob("traffic=*"))
    assert kinds == ["traffic=canary-probe", "traffic=rejected", "traffic=smoke", "traffic=synthetic"]


@pytest.mark.parametrize(
    ("header", "status", "kind"),
    [(None, 200, "production"), ("production", 201, "production"), (None, 422, "rejected"),
     ("Smoke", 200, "smoke"), ("canary-probe", 500, "canary-probe"), ("replay", 200, "replay"),
     ("anything", 200, "synthetic")],
)  # fmt: skip
def test_the_traffic_kind_comes_from_the_header_then_the_status(header, status, kind):
    assert traffic_kind(header, status) == kind


def test_a_window_with_mixed_types_is_read_with_the_signature_types_and_bad_rows_counted(tmp_path):
    # Two files as the capture wrote them before it knew the signature: one with numbers, one where a client's
    # "ten" turned the column into text. Read without types, pyarrow refuses to combine them.
    now = datetime.now(UTC)
    folder = tmp_path / "captures" / "model=churn" / f"hour={hour_of(now)}"
    folder.mkdir(parents=True)
    for name, values in (("a", [3, 4]), ("b", ["10", "ten"])):
        records = [
            {"tenure_months": v, "_request_id": f"{name}{i}", "_row": 0, "_timestamp": now, "_model": "churn",
             "_version": "3", "_status": 200, "_prediction": 1}
            for i, v in enumerate(values)
        ]  # fmt: skip
        (folder / f"part-{name}.parquet").write_bytes(parquet_bytes(records))
    with pytest.raises(Exception, match="tenure_months"):
        read_captures(str(tmp_path), "churn", *WINDOW)

    captured = read_captures(str(tmp_path), "churn", *WINDOW, types=SIGNATURE, meta=[REQUEST_ID])

    assert sorted(captured["tenure_months"].tolist()) == [3, 4, 10]
    assert str(captured["tenure_months"].dtype) == "int64"
    assert captured.attrs == {"bad_rows": 1, "bad_columns": ["tenure_months"]}


def test_a_value_of_another_type_is_stored_null_and_named(tmp_path):
    records = to_records(
        model="churn", version="3", rid="r", moment=datetime.now(UTC), status=200,
        request_body=scoring({"tenure_months": "ten", "monthly_spend": True, "customer_id": 7}),
        response_body=b"[1]", signature=SIGNATURE,
    )  # fmt: skip

    assert records[0]["tenure_months"] is None
    assert records[0][INVALID] == "tenure_months,monthly_spend,customer_id"


def test_names_outside_the_registry_rules_are_never_written_and_nothing_leaves_the_root(tmp_path):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    outside.mkdir()
    writer = CaptureWriter(str(root))
    for name in ("../../outside/evil", "../outside", "a/b", "..", "x y"):
        writer.submit(name, "1", "r", 200, scoring({"x": 1.0}), b"[1]")
    # A model folder that links out of the root (planted on a shared disk) is refused by its resolved path.
    (root / "captures").mkdir(parents=True)
    os.symlink(outside, root / "captures" / "model=linked")
    writer.submit("linked", "1", "r", 200, scoring({"x": 1.0}), b"[1]")
    writer.flush()
    stats = writer.stats()
    writer.close()

    assert list(outside.rglob("*")) == []
    assert not list(tmp_path.glob("*.parquet"))
    assert stats["refused_requests"] == 5
    assert stats["written_rows"] == 0
    assert "is not under the capture root" in stats["last_error"]


def test_the_serving_side_checks_names_with_the_registry_rule():
    assert MODEL_NAME_PATTERN == REGISTRY_MODEL_NAME_PATTERN


def test_a_signature_setting_is_checked():
    assert check_capture_settings({"signature": {"x": "double"}})["signature"] == {"x": "double"}
    with pytest.raises(ValueError, match="signature"):
        check_capture_settings({"signature": {"x": "decimal"}})
    with pytest.raises(ValueError, match="signature"):
        check_capture_settings({"signature": {"_row": "long"}})
