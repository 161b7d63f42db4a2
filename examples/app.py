"""The example app of flask-bgjobs: ``make demo`` serves it on http://127.0.0.1:5000.

Its SQLite files go to ``examples/instance/``. It grows with each capability of the project.
"""

from __future__ import annotations

from flask import Flask, render_template_string
from sqlalchemy import Column, Integer, MetaData, Table, Text, func, select

from flask_bgjobs.clock import utcnow
from flask_bgjobs.sqlite import MonthlyDatabase, Schema

metadata = MetaData()
visits = Table(
    "visit",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", Text, nullable=False),
    Column("path", Text, nullable=False),
)

PAGE = """<!doctype html>
<title>flask-bgjobs example</title>
<h1>flask-bgjobs example</h1>
<p>Each visit is written to a monthly SQLite file in <code>{{ folder }}</code>.</p>
<table border="1" cellpadding="4">
  <tr><th>month</th><th>visits</th></tr>
  {% for month, n in counts %}<tr><td>{{ month }}</td><td>{{ n }}</td></tr>{% endfor %}
</table>
"""


def create_app() -> Flask:
    app = Flask(__name__)
    visit_log = MonthlyDatabase(f"{app.instance_path}/visits", "visits", Schema(metadata))

    @app.get("/")
    def index() -> str:
        with visit_log.write() as tx:
            tx.execute("INSERT INTO visit (at, path) VALUES (?, ?)", (utcnow().isoformat(), "/"))
        counts = []
        for month in visit_log.months():
            with visit_log.database(month).read() as conn:
                counts.append(
                    (month, conn.execute(select(func.count()).select_from(visits)).scalar())
                )
        return render_template_string(PAGE, folder=visit_log.directory, counts=counts)

    return app
