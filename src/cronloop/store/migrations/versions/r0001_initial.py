"""Initial schema: revision counter, objects, labels, change feed.

A frozen copy of the schema at this revision (not an import of ``schema.py``), so later
changes to the live schema never rewrite history.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _envelope_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("kind", sa.String(63), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("resource_version", sa.BigInteger, nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("owner_uid", sa.String(64), nullable=True),
        sa.Column("unique_key", sa.String(512), nullable=True),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    ]


def upgrade() -> None:
    meta = op.create_table(
        "store_meta",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("compacted_before", sa.BigInteger, nullable=False),
        sa.CheckConstraint("id = 1", name="ck_store_meta_single_row"),
    )
    op.bulk_insert(meta, [{"id": 1, "revision": 0, "compacted_before": 1}])
    op.create_table(
        "objects",
        sa.Column("uid", sa.String(64), primary_key=True),
        *_envelope_columns(),
        sa.UniqueConstraint("kind", "name", name="uq_objects_kind_name"),
        sa.UniqueConstraint("kind", "unique_key", name="uq_objects_kind_unique_key"),
        sa.ForeignKeyConstraint(["owner_uid"], ["objects.uid"], name="fk_objects_owner_uid"),
    )
    op.create_index("ix_objects_owner_uid", "objects", ["owner_uid"])
    op.create_table(
        "object_labels",
        sa.Column("uid", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(253), primary_key=True),
        sa.Column("value", sa.String(253), nullable=False),
        sa.Column("kind", sa.String(63), nullable=False),
        sa.ForeignKeyConstraint(
            ["uid"], ["objects.uid"], name="fk_object_labels_uid", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_object_labels_selector", "object_labels", ["kind", "key", "value"])
    op.create_table(
        "events",
        sa.Column(
            "revision",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("uid", sa.String(64), nullable=False),
        *_envelope_columns(),
    )
    op.create_index("ix_events_kind_revision", "events", ["kind", "revision"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("object_labels")
    op.drop_table("objects")
    op.drop_table("store_meta")
