"""The errors every sandbox service raises: what views turn into a message or a form's errors."""


class SandboxError(Exception):
    """A request that cannot be carried out now; the message is shown to the user."""


class InvalidInput(SandboxError):
    """Input the rules refuse; `errors` maps a field name ("" for the whole form) to messages."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__(" ".join(m for msgs in errors.values() for m in msgs))


class NotQueued(SandboxError):
    """The claim was taken, but the task queue refused its task: the claim was released at once
    with the reason (see claims.enqueue), and the caller must not say the action is under way."""

    def __init__(self, action: str, reason: str):
        self.action, self.reason = action, reason
        super().__init__(f"{action.capitalize()} was not started: {reason}. Retry when it is back.")


class LostClaim(Exception):
    """The action's claim was taken over (by Destroy) while it ran: stop, and undo what it made."""
