"""Users' traffic for the serving tests: one-row requests sent in a background thread until stopped."""

from __future__ import annotations

import threading

import requests


class Users:
    """
    One-row requests, tenures 0-99 in turn, sent as users send them (one keep-alive session) until stopped.

    ``answers`` counts the statuses each version gave (``X-MLOps-Model-Version``, "?" where no version is named);
    ``sent`` counts the requests answered. With *rate*, at most that many requests a second; else back to back.
    """

    def __init__(self, endpoint: str, rate: float | None = None) -> None:
        self.endpoint = endpoint
        self.rate = rate
        self.answers: dict[str, list[int]] = {}
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)

    def start(self) -> Users:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def __enter__(self) -> Users:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

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
                finally:
                    if self.rate:
                        self._stop.wait(1.0 / self.rate)
                self.sent += 1
                version = answer.headers.get("X-MLOps-Model-Version") or "?"
                self.answers.setdefault(version, []).append(answer.status_code)
