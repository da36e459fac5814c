"""The `<id:…>` path converter: `<int:…>` bounded to what a database column can hold.

Django's `int` converter takes any run of digits, and a number past 2**63 reaches the database
driver, which raises OverflowError (a 500) in lookups Django does not guard (foreign keys, `__in`).
With this converter an out-of-range number simply matches no URL: a 404, like any missing object.
Registered once, in `CoreConfig.ready()`, for the HTTP URLconfs and the WebSocket routes alike."""

from .inputs import MAX_ID


class BoundedIntConverter:
    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > MAX_ID:
            raise ValueError(f"{value} is out of range")  # Django: "this URL does not match"
        return number

    def to_url(self, value: int) -> str:
        return str(int(value))
