"""The campaign wizard's parts: its state between steps, the forms generated from incentive
config models, the steps' validation and the review's planning figures.

The pages themselves are in :mod:`web.ui.pages.wizard`.
"""
