"""The service's errors: one type per API shape, each answered by one handler.

- `ServiceError` on livemind's routes: `{"error", "field", "value", "expected", "index"}`.
- `OpenAIError` on the OpenAI-compatible routes: `{"error": {"message", "type", "param", "code"}}`,
  as the official client reads it.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from livemind.serve.api.protocol import short, validation_problem


class ServiceError(Exception):
    """An error of a livemind route: HTTP status, message, and where (field, value, expected, index)."""

    def __init__(self, status: int, error: str, **detail: Any) -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail

    @classmethod
    def invalid(cls, exc: Exception) -> ServiceError:
        """A failed validation of a request body: malformed JSON (400) or the first bad field (422)."""
        p = validation_problem(exc)
        return cls(p.status, p.error, field=p.field, value=p.value, expected=p.expected, index=p.index)

    def response(self) -> JSONResponse:
        return livemind_error(self.status, self.error, **self.detail)


def livemind_error(status: int, error: str, field: str | None = None, value: Any = None, expected: str | None = None,
                   index: int | None = None, headers: dict[str, str] | None = None,
                   retry: bool | None = None) -> JSONResponse:
    """livemind's error body; `retry` (only where given) says whether asking again can succeed."""
    body = {"error": error, "field": field, "value": short(value), "expected": expected, "index": index}
    if retry is not None:
        body["retry"] = retry
    return JSONResponse(body, status_code=status, headers=headers)


class OpenAIError(Exception):
    """An error of an OpenAI-compatible route."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")

    @classmethod
    def invalid(cls, exc: Exception) -> OpenAIError:
        """A failed validation of a request body, naming the parameter (cut values)."""
        problem = validation_problem(exc)
        if problem.field is None:
            return cls(400, problem.error)
        return cls(400, f"{problem.field}: {problem.expected} (got {short(problem.value)!r})", param=problem.field)

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.kind, "param": self.param,
                                       "code": self.code}}, status_code=self.status)
