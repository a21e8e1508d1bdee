"""Control-plane schema migrations, one file per revision, applied in order."""
