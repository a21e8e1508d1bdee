"""The consent ledger: per user, per purpose, append-only, queryable as of any past instant.

Its parts are imported from their modules (`consentry.ledger.rules`, `.bulk`, `.service`,
`.records`, `.append`, `.sync`, `.signals`, `.anchor`, `.group`): the rules are pure, the
rest needs a store.
"""
