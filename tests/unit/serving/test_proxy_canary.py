"""The endpoint proxy with a canary: a share of the users' requests answered by the canary, by request id."""

from __future__ import annotations

import requests

from airflow_mlops.serving.proxy import VERSION_HEADER, mirrored
from tests.support.proxy import start_proxy, start_stub_model_server, write_state

ROW = {"dataframe_records": [{"x": 1}]}


def test_the_canary_answers_its_share_of_users_requests_and_a_dead_canary_costs_them_nothing(tmp_path):
    champion, canary = start_stub_model_server(), start_stub_model_server()
    state = tmp_path / "serving" / "churn" / "state.json"
    write_state(state, champion.port, "3", canary={"host": "127.0.0.1", "port": canary.port, "version": "4",
                                                   "percent": 30})  # fmt: skip
    proxy = start_proxy(state)
    try:
        ids = [f"req-{i}" for i in range(200)]
        with requests.Session() as session:
            answered = {
                rid: session.post(
                    f"{proxy.url}/invocations", json=ROW, headers={"X-Request-Id": rid}, timeout=10
                )
                for rid in ids
            }
            probe = session.post(
                f"{proxy.url}/invocations", json=ROW, headers={"X-Request-Id": ids[0], "X-MLOps-Traffic": "smoke"},
                timeout=10,
            )  # fmt: skip

            assert all(a.status_code == 200 for a in answered.values())
            by_canary = {rid for rid, a in answered.items() if a.headers[VERSION_HEADER] == "4"}
            assert by_canary == {rid for rid in ids if mirrored(rid, 30)}
            assert 40 <= len(by_canary) <= 80  # about 30% of 200
            assert probe.headers[VERSION_HEADER] == "3"  # the package's own requests go to what serves

            canary.stop()
            after = [session.post(f"{proxy.url}/invocations", json=ROW, headers={"X-Request-Id": rid}, timeout=10)
                     for rid in sorted(by_canary)]  # fmt: skip
        assert {(a.status_code, a.headers[VERSION_HEADER]) for a in after} == {(200, "3")}
    finally:
        proxy.stop()
        champion.stop()
        canary.stop()
