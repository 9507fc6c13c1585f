"""Automatic trading: a user's trading profile and the agent that places their orders from it."""
