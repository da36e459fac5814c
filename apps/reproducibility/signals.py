"""Signals other apps may listen to."""

from django.dispatch import Signal

# Sent inside the transaction that settles a reproduction's verdict (so what a listener writes
# commits with it, or not at all); kwargs: reproduction.
reproduction_settled = Signal()
