"""
The main flow once in a real browser: headless Chromium from Debian, driven by Playwright (no browser
download). Log in, trigger the DAG from its page through the params form, open Required Actions, read the
evaluation report, approve with a comment. Screenshots are kept under test-artifacts/ui/.
"""

from __future__ import annotations

import shutil

import pytest

from airflow_mlops.demo.run import MODEL_NAME, sample_records
from airflow_mlops.demo.stack import DAG_ID
from tests.conftest import ARTIFACTS

pytestmark = [pytest.mark.integration, pytest.mark.live]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SHOTS = ARTIFACTS / "ui"


@pytest.fixture
def page():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium"):
        pytest.fail("Debian's chromium is not installed (apt-get install chromium chromium-driver)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def _shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _login(page, stack, user: str, shot: str | None = None) -> None:
    page.goto(f"{stack.airflow_url}/")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(stack.passwords[user])
    if shot:
        _shot(page, shot)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{stack.airflow_url}/")


def test_trigger_read_the_report_and_approve_in_the_browser(live_stack, page):
    stack = live_stack
    stack.wait_for_dag(DAG_ID)
    before = {run["dag_run_id"] for run in stack.api("GET", f"/dags/{DAG_ID}/dagRuns").json()["dag_runs"]}

    # The admin triggers; a reviewer approves (the user who triggered a run may not approve it).
    _login(page, stack, "admin", shot="01-login")

    # Trigger from the DAG's page through the params form (which also unpauses the DAG).
    page.goto(f"{stack.airflow_url}/dags/{DAG_ID}")
    page.get_by_role("button", name="Trigger").click()
    form = page.get_by_role("dialog")
    form.locator("#element_model_name").fill(MODEL_NAME)
    _shot(page, "02-trigger-form")
    form.get_by_role("button", name="Trigger").click()
    form.wait_for(state="hidden")

    runs = stack.api("GET", f"/dags/{DAG_ID}/dagRuns").json()["dag_runs"]
    (run,) = [r for r in runs if r["dag_run_id"] not in before]
    assert run["conf"]["model_name"] == MODEL_NAME
    assert stack.wait_for_approval_request(DAG_ID, run["dag_run_id"]) == "awaiting_input"
    candidate = str(stack.xcom(DAG_ID, run["dag_run_id"], "register")["version"])

    # The request is listed under Required Actions; its page shows the evaluation report.
    page.context.clear_cookies()
    _login(page, stack, "reviewer")
    page.goto(f"{stack.airflow_url}/required_actions")
    subject = page.get_by_role("link", name=f"{MODEL_NAME} v{candidate}: promote")
    subject.first.wait_for()
    _shot(page, "03-required-actions")
    subject.first.click()
    page.get_by_text("accuracy_score").first.wait_for()
    assert page.get_by_text("Decision: passed").first.is_visible()
    assert page.get_by_role("link", name="MLflow model version").first.is_visible()
    # The validation's Data Docs, published to MLflow: a link that opens the page on the MLflow server.
    data_docs = page.get_by_role("link", name="Data Docs").first
    assert data_docs.is_visible()
    docs_href = data_docs.get_attribute("href")
    assert docs_href.startswith(f"{stack.mlflow_url}/"), docs_href
    assert docs_href.endswith("/artifacts/data_docs/index.html"), docs_href

    # One table of candidate against champion, every metric in it, with the values the evaluation measured.
    evaluation = stack.xcom(DAG_ID, run["dag_run_id"], "evaluate")
    for header in ("metric", "candidate", "champion", "delta", "gate", "result"):
        assert page.get_by_role("columnheader", name=header, exact=True).first.is_visible(), header
    accuracy = evaluation["metrics"]["accuracy_score"]["candidate"]
    assert page.get_by_role("cell", name=f"{accuracy:.4f}", exact=True).first.is_visible()
    for metric in evaluation["metrics"]:
        assert page.get_by_role("cell", name=metric, exact=True).count() >= 1, metric
    _shot(page, "04-report-metrics")
    if evaluation["champion_version"] is not None:  # drift is measured against the champion's data
        assert page.get_by_role("columnheader", name="statistic", exact=True).first.is_visible()
        assert page.get_by_role("cell", name="tenure_months", exact=True).count() >= 1
    # The plots show on the page, served by the MLflow server, each a link that opens it there.
    plots = page.locator(f'a[href^="{stack.mlflow_url}/"] img[src^="{stack.mlflow_url}/get-artifact?"]')
    plots.first.scroll_into_view_if_needed()
    page.wait_for_function(
        "prefix => [...document.images].some(i => i.src.startsWith(prefix) && i.complete && i.naturalWidth > 0)",
        arg=f"{stack.mlflow_url}/get-artifact?",
    )
    pictures = [key for key, uri in evaluation["artifacts"].items() if not uri.endswith((".csv", ".json"))]
    assert plots.count() == len(pictures)
    # What changed from the champion, and the infra validation's smoke test and latency.
    page.get_by_role("heading", name="What changed").first.scroll_into_view_if_needed()
    for header in ("section", "item", f"candidate v{candidate}", "latency (ms)", "p95"):
        assert page.get_by_role("columnheader", name=header, exact=True).first.is_visible(), header
    for cell in ("hyper-parameters", "training data", "code version"):
        assert page.get_by_role("cell", name=cell, exact=True).count() >= 1, cell
    assert page.get_by_text("Smoke test passed").first.is_visible()
    # The per-class table when the evaluation logged per-class metrics (MLflow does for some classifiers).
    import mlflow

    from airflow_mlops.provenance import per_class_metrics

    per_class = per_class_metrics(mlflow.MlflowClient(stack.mlflow_url), evaluation)
    heading = page.get_by_role("heading", name="Per-class metrics")
    assert (heading.count() > 0) == bool(per_class), per_class
    if per_class:
        assert heading.first.is_visible()
        for row in per_class:
            assert page.get_by_role("cell", name=str(row["positive_class"]), exact=True).count() >= 1
    # Every link of the request (all but the UI's own) opens in a reviewer's browser: no file://, no empty link.
    hrefs = page.locator("a[href]").evaluate_all("links => links.map(a => a.href)")
    outside = [href for href in hrefs if not href.startswith(stack.airflow_url)]
    assert any(href.startswith(stack.mlflow_url) for href in outside), outside
    assert all(href.startswith(("http://", "https://")) for href in outside), outside
    # Locations are short names or links: no folder of the worker shows.
    text = page.locator("body").inner_text()
    assert str(stack.home) not in text
    assert "/tmp/" not in text
    page.locator("#element_comment").fill("approved in the browser")
    _shot(page, "04-report")
    page.get_by_role("button", name="Approve").click()

    assert stack.wait_for_run(DAG_ID, run["dag_run_id"]) == "success", stack.task_states(
        DAG_ID, run["dag_run_id"]
    )
    page.reload()
    page.get_by_text("Success").first.wait_for()
    _shot(page, "05-after-approval")
    decision = stack.xcom(DAG_ID, run["dag_run_id"], "approve")
    assert decision["approver"] == "reviewer"
    assert decision["comment"] == "approved in the browser"
    assert stack.alias_version(MODEL_NAME) == candidate
    assert stack.predict(sample_records(stack))[0] == candidate
