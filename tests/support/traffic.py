"""Users' traffic for the serving tests: one-row requests sent in a background thread until stopped."""

from __future__ import annotations

import threading

import requests


class Users:
    """
    One-row requests, tenures 0-99 in turn, sent as users send them (one keep-alive session) until stopped.

    ``answers`` counts the statuses each version gave (``X-MLOps-Model-Version``, "?" where no version is named).
    """

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.answers: dict[str, list[int]] = {}
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)

    def __enter__(self) -> Users:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _send(self) -> None:
        index = 0
        with requests.Session() as session:
            while not self._stop.is_set():
                row = {"tenure_months": float(index % 100), "monthly_spend": 20.0 + index % 7}
                index += 1
                try:
                    answer = session.post(
                        f"{self.endpoint}/invocations", json={"dataframe_records": [row]}, timeout=30
                    )
                except requests.RequestException:
                    continue
                self.sent += 1
                version = answer.headers.get("X-MLOps-Model-Version") or "?"
                self.answers.setdefault(version, []).append(answer.status_code)
