"""Signals other apps may listen to. Listeners only enqueue work; they never change the run."""

from django.dispatch import Signal

# Sent after the transaction that put a run in a final state commits; kwargs: run_id, state.
run_finished = Signal()
