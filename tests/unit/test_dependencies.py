"""The private APIs of our dependencies that maild relies on, checked by name.

maild overrides or reads a few internals (pyproject.toml bounds those
libraries' versions for it). When a release changes one, this fails first,
naming the library, its version and the maild module to fix;
``.ci/check-latest`` runs it, with the tests of those modules, against the
newest versions pyproject.toml allows.
"""

from __future__ import annotations

import inspect
import re
from importlib.metadata import version

import aiosmtpd.smtp
import jinja2
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.dialects import postgresql, sqlite


def _where(lib: str, module: str) -> str:
    return f"{lib} {version(lib)}: see {module}"


@pytest.mark.parametrize("name", ["_handle_client", "_timeout_cb", "_smtp_methods", "push",
                                  "_reader", "_writer", "_reset_timeout", "_call_handler_hook",
                                  "_set_post_data_state", "check_helo_needed",
                                  "check_auth_needed"])  # fmt: skip
def test_aiosmtpd_smtp_internals(name):
    """maild.intake.smtp overrides or calls these (per-IP cap, 421 on idle, draining,
    DATA read in chunks)."""
    smtp = aiosmtpd.smtp.SMTP
    assigned = re.search(rf"self\.{name}\s*(:[^=\n]*)?=[^=]", inspect.getsource(smtp))
    found = hasattr(smtp, name) or assigned is not None
    assert found, (
        f"aiosmtpd.smtp.SMTP.{name} is gone ({_where('aiosmtpd', 'maild/intake/smtp.py')})"
    )
    if name == "_handle_client":
        assert inspect.iscoroutinefunction(smtp._handle_client), _where(
            "aiosmtpd", "maild/intake/smtp.py"
        )
    if name == "_reader":  # DATA is read from it in chunks, the rest fed back
        assert "StreamReader(" in inspect.getsource(smtp.__init__), _where(
            "aiosmtpd", "maild/intake/smtp.py (_ChunkedData)"
        )


def test_jinja2_template_default_module():
    """maild.mail.render overrides Template._get_default_module(ctx) (imports without
    the per-render globals check)."""
    method = getattr(jinja2.Template, "_get_default_module", None)
    assert method is not None, _where("Jinja2", "maild/mail/render.py")
    assert list(inspect.signature(method).parameters)[:2] == ["self", "ctx"], _where(
        "Jinja2", "maild/mail/render.py")  # fmt: skip


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.psycopg.dialect()],
                         ids=["sqlite", "postgresql"])  # fmt: skip
def test_sqlalchemy_compiled_statement_internals(dialect):
    """maild.store.db.Direct reads these from a compiled statement."""
    t = Table("t", MetaData(), Column("id", Integer, primary_key=True),
              Column("name", String, default="x"), Column("kind", String))  # fmt: skip
    where = _where("SQLAlchemy", "maild/store/db.py (Direct, _Plan)")
    ins = insert(t).returning(t.c.id).compile(dialect=dialect, column_keys=["kind"])
    for attr in ("positional", "binds", "insert_prefetch", "update_prefetch", "string"):
        assert hasattr(ins, attr), f"compiled.{attr} is gone ({where})"
    names = ins.positiontup if ins.positional else list(ins.binds)
    assert set(names) == {"name", "kind"}, where
    assert [c.key for c in ins.insert_prefetch] == ["name"], where
    assert ins.insert_prefetch[0].default.is_scalar, where
    sel = select(t.c.id).where(t.c.kind == "fixed").compile(dialect=dialect)
    (name,) = sel.positiontup if sel.positional else [n for n in sel.binds if "%" not in n]
    bind = sel.binds[name]
    assert not bind.required and bind.effective_value == "fixed", where
    assert hasattr(dialect, "is_disconnect") and hasattr(type(dialect), "loaded_dbapi"), where
