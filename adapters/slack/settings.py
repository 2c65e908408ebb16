"""Slack settings: one workspace, one bot token, one signing secret, two channels."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class SlackSettings(BaseModel):
    """What keyturn needs to run its Slack surface.

    Attributes:
        bot_token: the ``xoxb-`` bot token (never logged; ``repr`` hides it).
        signing_secret: verifies every request Slack sends; the app refuses to start
            without it.
        approvers_channel: channel id where approval cards are posted.
        security_channel: channel id of the security feed (receipts, checkpoints).
        workspace_id: the Slack team id; requests from any other workspace are refused.
        min_interval_seconds: pace per channel (Slack allows about 1 message/s).
        socket_mode: receive Slack's requests over a Socket Mode WebSocket instead of
            ``POST /slack/events`` (for workspaces that cannot reach keyturn by URL).
        app_token: the app-level ``xapp-`` token Socket Mode connects with.
        work_concurrency: how many clicks are worked on at once after their ack
            (identity, eligibility, the decision); the rest wait in a queue.
        work_capacity: how many acknowledged clicks may wait; beyond it a click is
            acknowledged and its user told keyturn is busy (nothing recorded).
        shutdown_drain_seconds: on shutdown, how long queued clicks may take to
            finish; users of clicks still unfinished then are told to click again.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bot_token: SecretStr
    signing_secret: SecretStr
    approvers_channel: str
    security_channel: str
    workspace_id: str
    min_interval_seconds: float = 1.0
    socket_mode: bool = False
    app_token: SecretStr | None = None
    work_concurrency: int = Field(default=4, ge=1, le=64)
    work_capacity: int = Field(default=1000, ge=1, le=100_000)
    shutdown_drain_seconds: float = Field(default=10.0, ge=0, le=300)

    @field_validator("bot_token", "signing_secret")
    @classmethod
    def _secret_present(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("approvers_channel", "security_channel", "workspace_id")
    @classmethod
    def _id_present(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @model_validator(mode="after")
    def _socket_mode_has_its_token(self) -> SlackSettings:
        token = self.app_token.get_secret_value().strip() if self.app_token else ""
        if self.socket_mode and not token.startswith("xapp-"):
            raise ValueError("socket_mode needs the app-level token (app_token, xapp-…)")
        return self
