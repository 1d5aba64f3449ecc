"""
The answer-reading trigger serializes exactly its arguments and turns what Airflow's triggerer reads into one event.

The triggerer's read (``get_hitl_detail_content_detail``) is replaced by one that answers as Airflow's would, with
Airflow's own response model and error.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import pytest
from airflow.sdk.api.datamodels._generated import HITLDetailResponse, HITLUser
from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
from airflow.sdk.execution_time.comms import ErrorResponse

from airflow_mlops.triggers import approval
from airflow_mlops.triggers.approval import HITLAnswerTrigger

TI_ID = str(uuid.uuid4())


def events(trigger: HITLAnswerTrigger) -> list[dict]:
    async def collect():
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


@pytest.fixture
def airflow_answers(monkeypatch):
    """Make the triggerer's read answer with each of *answers* in turn (an exception is raised)."""
    asked: list[uuid.UUID] = []

    def install(*answers):
        queue = list(answers)

        def read(ti_id):
            asked.append(ti_id)
            answer = queue.pop(0) if len(queue) > 1 else queue[0]
            if isinstance(answer, BaseException):
                raise answer
            return answer

        monkeypatch.setattr(approval, "get_hitl_detail_content_detail", read)
        return asked

    return install


def api_error(status: int) -> AirflowRuntimeError:
    return AirflowRuntimeError(
        ErrorResponse(error=ErrorType.API_SERVER_ERROR, detail={"status_code": status, "message": "x"})
    )


def test_trigger_serializes_exactly_its_arguments():
    trigger = HITLAnswerTrigger(ti_id=TI_ID, deadline=1e9, poll_interval=3, not_before=5e8)

    classpath, kwargs = trigger.serialize()

    assert classpath == "airflow_mlops.triggers.approval.HITLAnswerTrigger"
    assert kwargs == {"ti_id": TI_ID, "deadline": 1e9, "poll_interval": 3.0, "not_before": 5e8}
    assert HITLAnswerTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_an_answered_request_gives_the_answer_and_who_gave_it(airflow_answers):
    when = datetime(2026, 12, 5, 9, 30, tzinfo=UTC)
    asked = airflow_answers(
        HITLDetailResponse(
            response_received=True, responded_by_user=HITLUser(id="reviewer", name="Rita Reviewer"),
            responded_at=when, chosen_options=["Approve"], params_input={"comment": "fine"},
        )
    )  # fmt: skip

    assert events(HITLAnswerTrigger(ti_id=TI_ID, deadline=time.time() + 60)) == [
        {
            "status": "answered",
            "message": f"Task instance {TI_ID} holds an answer",
            "chosen_options": ["Approve"],
            "params_input": {"comment": "fine"},
            "responded_at": "2026-12-05T09:30:00+00:00",
            "responded_by_user": {"id": "reviewer", "name": "Rita Reviewer"},
            "timedout": False,
        }
    ]
    assert asked == [uuid.UUID(TI_ID)]


def test_a_timeout_default_is_an_answer_nobody_gave(airflow_answers):
    when = datetime(2026, 12, 5, 9, 30, tzinfo=UTC)
    airflow_answers(
        HITLDetailResponse(
            response_received=True, responded_at=when, chosen_options=["Reject"], params_input={}
        )
    )

    (event,) = events(HITLAnswerTrigger(ti_id=TI_ID, deadline=time.time() + 60))

    assert (event["status"], event["chosen_options"], event["responded_by_user"], event["timedout"]) == (
        "answered", ["Reject"], None, True,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "what"),
    [
        (
            HITLDetailResponse(response_received=False, chosen_options=None, responded_at=None),
            "a request nobody answered",
        ),
        (api_error(404), "no request"),
    ],
)
def test_no_answer_to_adopt_is_said_at_once(airflow_answers, answer, what):
    asked = airflow_answers(answer)

    assert events(HITLAnswerTrigger(ti_id=TI_ID, deadline=time.time() + 60)) == [
        {"status": "unanswered", "message": f"Task instance {TI_ID} has {what}"}
    ]
    assert len(asked) == 1


def test_failed_reads_are_retried_then_reported(airflow_answers):
    asked = airflow_answers(api_error(503))

    (event,) = events(HITLAnswerTrigger(ti_id=TI_ID, deadline=time.time() + 60, poll_interval=0))

    assert event["status"] == "error"
    assert event["message"].startswith(f"Cannot read the Human-in-the-loop request of {TI_ID}: ")
    assert len(asked) == approval.MAX_CONSECUTIVE_ERRORS


def test_a_failed_read_then_an_answer_gives_the_answer(airflow_answers):
    when = datetime(2026, 12, 5, 9, 30, tzinfo=UTC)
    airflow_answers(
        api_error(503),
        HITLDetailResponse(
            response_received=True, responded_by_user=HITLUser(id="r", name="r"), responded_at=when,
            chosen_options=["Approve"],
        ),
    )  # fmt: skip

    (event,) = events(HITLAnswerTrigger(ti_id=TI_ID, deadline=time.time() + 60, poll_interval=0))

    assert event["status"] == "answered"
