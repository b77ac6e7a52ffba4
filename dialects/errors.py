class DialectError(ValueError):
    """A request a dialect cannot turn into a job: names the field and the rule broken."""

    def __init__(self, field: str, rule: str, status: int = 400) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule
        self.status = status
