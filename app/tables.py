"""Every table module, imported in one place so Alembic, the migration test and the app see the same
metadata (`SQLModel.metadata`). A new `models.py` is added here."""

import wallet.models  # noqa: F401
